"""Example downstream consumer: voice activity detection on every finished recording.

Subscribed to the recordings topic (main.py: analyze_recording), it streams the WAV from
Cloud Storage, runs webrtcvad on 30 ms frames and writes a JSON sidecar next to it,
`recordings/<uid>/<day>/<start>.vad.json`: speech ratio and speech segments.
docs/consumers.md explains the pattern; copy this folder to hang ASR or embeddings on the
pipeline.

* Self-contained: this folder is the function's whole source (main.py, this file,
  requirements.txt) and imports nothing from the receiver. What it relies on is the
  receiver's event contract, restated below (RECORDINGS_PREFIX, the 44-byte WAV header,
  the event's `bucket` and `name`); the repository's tests check that the two agree.
* Streams, never loads: the WAV is read READ_BYTES at a time (a 60-minute recording at
  16 kHz is ~115 MB), so memory stays flat however long the recording.
* Idempotent: events are at-least-once and repeated. The sidecar names the WAV generation
  it describes; a repeat finds it and does nothing; a write is generation-checked.
* Erase-safe: a WAV that is gone is a no-op, and a sidecar written while the WAV was being
  erased is deleted again (see `process`).
* Compaction-aware: where the receiver compacts finished recordings (COMPACTION_FORMAT), the
  WAV may have become `<start>.flac` or `<start>.opus` before or while this runs; that file
  is analyzed instead (decoded with soundfile), and counts as the same audio as the WAV
  generation it names in its `source_generation` metadata.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import os
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import BinaryIO

import soundfile
import webrtcvad
from google.api_core import exceptions
from google.cloud import storage

VERSION = 1  # of the sidecar's content; a new version re-analyzes on the next event
SIDECAR_SUFFIX = ".vad.json"  # replaces the WAV's ".wav"

# The receiver's contract: a finished recording is a PCM16 mono WAV with the canonical
# 44-byte header, named recordings/<uid>/<day>/<start>.wav.
RECORDINGS_PREFIX = "recordings/"
HEADER_BYTES = 44
SAMPLE_BYTES = 2
# ... and, where compaction is on, the WAV is replaced by one of these, carrying the WAV's
# generation in its metadata.
COMPACTED_SUFFIXES = (".flac", ".opus")
SOURCE_GENERATION = "source_generation"

RATES = (8000, 16000, 32000, 48000)  # what webrtcvad accepts; others get a "skipped" sidecar
FRAME_MS = 30  # webrtcvad takes 10, 20 or 30 ms frames; 30 gives the steadiest decisions
# Smoothing of the per-frame decisions, in this order:
MAX_PAUSE_MS = 300  # 1. pauses up to this long inside speech are bridged (breaths, stops)
MIN_SPEECH_MS = 90  # 2. speech shorter than this is dropped (clicks, bumps on the mic)
READ_BYTES = 4 * 2**20  # one ranged download; the analysis holds a few such blocks at most

VAD_AGGRESSIVENESS = "VAD_AGGRESSIVENESS"  # the one setting's variable (infra/vad.tf sets it)
DEFAULT_AGGRESSIVENESS = 2


class SettingsError(ValueError):
    """A setting has an invalid value; the message names it."""


class BadEvent(ValueError):
    """An event that can never be processed: logged and acknowledged, not retried."""


class RecordingChanged(Exception):
    """The WAV was rewritten while we read it: raise, so Pub/Sub redelivers the event."""


# --- settings, client, logs: read or built once per instance -----------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """The consumer's settings, from environment variables (`instance_settings()` reads them once)."""

    # webrtcvad's mode, 0 (keeps the most audio as speech) to 3 (filters non-speech hardest).
    aggressiveness: int = DEFAULT_AGGRESSIVENESS

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        raw = environ.get(VAD_AGGRESSIVENESS) or str(DEFAULT_AGGRESSIVENESS)
        if raw not in ("0", "1", "2", "3"):
            raise SettingsError(f"{VAD_AGGRESSIVENESS}={raw!r} must be 0, 1, 2 or 3")
        return cls(aggressiveness=int(raw))


@functools.cache
def instance_settings() -> Settings:
    """This instance's settings, read from the environment on first use."""
    return Settings.from_env(os.environ)


@functools.cache
def storage_client() -> storage.Client:
    """This instance's client, built on first use: importing the module needs no
    credentials. On fake-gcs-server (STORAGE_EMULATOR_HOST), anonymous credentials."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "local", credentials=AnonymousCredentials()
        )
    return storage.Client()


def log(severity: str, event: str, **fields) -> None:
    """One JSON object per line, which Cloud Logging indexes (`jsonPayload.event`)."""
    entry = {"severity": severity, "message": event, "event": event, **fields}
    print(json.dumps(entry, default=str, separators=(",", ":")), flush=True)


# --- names and the WAV header ------------------------------------------------------------


def parse_header(blob: bytes) -> tuple[int, int]:
    """(sample_rate, data_bytes) of a canonical PCM16 mono WAV header; raises ValueError."""
    if len(blob) < HEADER_BYTES:
        raise ValueError("short WAV header")
    (riff, riff_size, wave, fmt, fmt_size, fmt_tag, channels, rate, _byte_rate, _align, bits, data, data_size) = (
        struct.unpack("<4sI4s4sIHHIIHH4sI", blob[:HEADER_BYTES])
    )
    if (riff, wave, fmt, data) != (b"RIFF", b"WAVE", b"fmt ", b"data"):
        raise ValueError("not a canonical PCM WAV header")
    if (fmt_size, fmt_tag, channels, bits) != (16, 1, 1, 16) or riff_size != 36 + data_size:
        raise ValueError("not a PCM16 mono header with exact sizes")
    return rate, data_size


def sidecar_name(wav_name: str) -> str:
    return wav_name.removesuffix(".wav") + SIDECAR_SUFFIX


# --- the analysis: pure, over any binary stream ------------------------------------------


def frames(stream: BinaryIO, frame_bytes: int, limit: int) -> Iterator[memoryview]:
    """Whole frames of the next `limit` bytes of `stream`, read READ_BYTES at a time. A
    trailing partial frame (under FRAME_MS of audio) is left out."""
    rest = b""
    while limit > 0:
        block = stream.read(min(READ_BYTES, limit))
        if not block:
            break
        limit -= len(block)
        data = memoryview(rest + block if rest else block)
        whole = len(data) - len(data) % frame_bytes
        for offset in range(0, whole, frame_bytes):
            yield data[offset : offset + frame_bytes]
        rest = bytes(data[whole:])


def segments(speech: Iterable[bool], max_pause_frames: int, min_speech_frames: int) -> Iterator[tuple[int, int]]:
    """Speech segments as [start, end) frame indexes from per-frame decisions: runs of
    speech joined across pauses of up to `max_pause_frames`, then runs shorter than
    `min_speech_frames` dropped. Streams: holds one segment at a time."""
    current: list[int] | None = None
    for index, is_speech in enumerate(speech):
        if not is_speech:
            continue
        if current is not None and index - current[1] <= max_pause_frames:
            current[1] = index + 1
            continue
        if current is not None and current[1] - current[0] >= min_speech_frames:
            yield current[0], current[1]
        current = [index, index + 1]
    if current is not None and current[1] - current[0] >= min_speech_frames:
        yield current[0], current[1]


def analyze(stream: BinaryIO, mode: int = DEFAULT_AGGRESSIVENESS) -> dict:
    """VAD over a PCM16 mono WAV read from `stream`: the sidecar's analysis fields, or
    `skipped` with the reason when the WAV cannot be analyzed."""
    try:
        rate, data_bytes = parse_header(stream.read(HEADER_BYTES))
    except ValueError as exc:
        return {"skipped": f"not a PCM16 mono WAV: {exc}"}
    return analyze_pcm(stream, rate, data_bytes, mode)


class DecodedPCM:
    """A compacted recording (FLAC or Opus, any stream soundfile reads) as PCM16 bytes,
    decoded as they are read."""

    def __init__(self, audio: soundfile.SoundFile):
        self.audio = audio

    def read(self, size: int) -> bytes:
        return self.audio.read(size // SAMPLE_BYTES, dtype="int16").astype("<i2", copy=False).tobytes()


class _Remembering:
    """A stream whose errors survive libsndfile: soundfile's read callbacks print an
    exception and report end of file, so a NotFound mid-read would look like a short file."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.error: BaseException | None = None

    def __getattr__(self, name):
        method = getattr(self.stream, name)
        if name not in ("read", "seek", "tell", "readinto"):
            return method

        def remembered(*args):
            try:
                return method(*args)
            except BaseException as exc:
                self.error = self.error or exc
                raise

        return remembered


def analyze_compacted(stream: BinaryIO, mode: int = DEFAULT_AGGRESSIVENESS) -> dict:
    """VAD over a compacted recording (.flac, .opus) read from a seekable `stream`."""
    source = _Remembering(stream)
    try:
        with soundfile.SoundFile(source) as audio:
            if audio.channels != 1:
                result = {"skipped": f"{audio.channels} channels, not mono"}
            else:
                result = analyze_pcm(DecodedPCM(audio), audio.samplerate, audio.frames * SAMPLE_BYTES, mode)
    except soundfile.LibsndfileError as exc:
        result = {"skipped": f"does not decode: {exc}"}
    if source.error is not None:
        raise source.error
    return result


def analyze_pcm(stream, rate: int, data_bytes: int, mode: int) -> dict:
    """VAD over `data_bytes` of PCM16 mono at `rate` read from `stream`."""
    seconds = data_bytes / (SAMPLE_BYTES * rate)
    result = {"sample_rate": rate, "duration_seconds": round(seconds, 3)}
    if rate not in RATES:
        return {**result, "skipped": f"webrtcvad supports {', '.join(map(str, RATES))} Hz, not {rate} Hz"}
    vad = webrtcvad.Vad(mode)
    frame_bytes = SAMPLE_BYTES * rate * FRAME_MS // 1000
    decisions = (vad.is_speech(frame, rate) for frame in frames(stream, frame_bytes, data_bytes))
    spans = [
        {"start": round(start * FRAME_MS / 1000, 3), "end": round(end * FRAME_MS / 1000, 3)}
        for start, end in segments(decisions, MAX_PAUSE_MS // FRAME_MS, -(-MIN_SPEECH_MS // FRAME_MS))
    ]
    speech = round(sum(s["end"] - s["start"] for s in spans), 3)
    return {
        **result,
        "frame_ms": FRAME_MS,
        "aggressiveness": mode,
        "max_pause_ms": MAX_PAUSE_MS,
        "min_speech_ms": MIN_SPEECH_MS,
        "speech_seconds": speech,
        "speech_ratio": round(speech / seconds, 4) if data_bytes else 0.0,
        "segments": spans,
    }


# --- the consumer: one finished-recording event -> one sidecar ---------------------------


def decode(cloud_event) -> tuple[str, str]:
    """(bucket, name) of a finished-recording event delivered by Pub/Sub (Eventarc or push)."""
    try:
        event = json.loads(base64.b64decode(cloud_event.data["message"]["data"]))
        bucket, name = event["bucket"], event["name"]
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadEvent(f"not a finished-recording event: {exc!r}") from None
    if not (
        isinstance(bucket, str)
        and bucket
        and isinstance(name, str)
        and name.startswith(RECORDINGS_PREFIX)
        and name.endswith(".wav")
    ):
        raise BadEvent(f"not a recording: bucket={bucket!r} name={name!r}")
    return bucket, name


def handle_event(cloud_event) -> dict | None:
    """Entry point (main.py: analyze_recording). Returns the sidecar written, if any.
    Raises only on what a redelivery can heal."""
    try:
        bucket, name = decode(cloud_event)
    except BadEvent as exc:
        log("ERROR", "vad_bad_event", error=str(exc))
        return None
    return process(bucket, name, instance_settings())


def process(bucket_name: str, name: str, settings: Settings) -> dict | None:
    """Write the sidecar of gs://bucket_name/name once per WAV generation; returns it, or
    None when there was nothing to write (erased, already done)."""
    started = time.monotonic()
    bucket = storage_client().bucket(bucket_name)
    found = recording_audio(bucket, name)
    if found is None:
        log("INFO", "vad_recording_gone", name=name)  # erased: nothing to do
        return None
    audio, generation = found
    sidecar = bucket.get_blob(sidecar_name(name))
    if _describes(sidecar, generation):
        log("INFO", "vad_already_done", name=name, generation=generation)  # a repeated event
        return None

    try:
        result = _read_and_analyze(bucket, audio, settings)
    except exceptions.NotFound:
        # Erased, rewritten, or compacted while it was read: compaction keeps the audio
        # (same generation named), so analyze the compacted file instead.
        found = recording_audio(bucket, name)
        if found is None or found[1] != generation or found[0].name == audio.name:
            return _gone_or_changed(bucket, name, generation)
        audio = found[0]
        result = _read_and_analyze(bucket, audio, settings)

    body = {
        "recording": name,
        "bucket": bucket_name,
        "generation": generation,
        "file": audio.name,
        **result,
        "analyzed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "version": VERSION,
    }
    written = bucket.blob(sidecar_name(name))
    written.metadata = {"wav_generation": generation, "vad_version": str(VERSION)}
    try:
        # Only over the sidecar we saw (0: none): two deliveries racing write it once.
        written.upload_from_string(
            json.dumps(body), content_type="application/json", if_generation_match=sidecar.generation if sidecar else 0
        )
    except exceptions.PreconditionFailed:
        if _describes(bucket.get_blob(sidecar_name(name)), generation):
            log("INFO", "vad_already_done", name=name, generation=generation)
            return None
        raise  # it describes another generation: let the retry sort it out

    # Erase race: an eraser that listed the recording's objects before this sidecar
    # existed would leave it behind. The recording still being there now means the eraser
    # has not deleted it yet, and it lists the sidecars again after that (docs/consumers.md).
    current = recording_audio(bucket, name)
    if current is None or current[1] != generation:
        _delete_quietly(written)
        return _gone_or_changed(bucket, name, generation)

    if "skipped" in body:
        log("WARNING", "vad_skipped", name=name, reason=body["skipped"])
    else:
        log(
            "INFO",
            "vad_analyzed",
            name=name,
            generation=generation,
            duration_seconds=body["duration_seconds"],
            speech_ratio=body["speech_ratio"],
            segments=len(body["segments"]),
            latency_ms=round((time.monotonic() - started) * 1000),
        )
    return body


def recording_audio(bucket, name: str) -> tuple[storage.Blob, str] | None:
    """(object, WAV generation) holding the recording named `name` (its WAV): the WAV
    itself, else the file compaction made of it; None when neither exists (erased)."""
    recording = bucket.get_blob(name)
    if recording is not None:
        return recording, str(recording.generation)
    stem = name.removesuffix(".wav")
    for suffix in COMPACTED_SUFFIXES:
        compacted = bucket.get_blob(stem + suffix)
        source = (compacted.metadata or {}).get(SOURCE_GENERATION) if compacted is not None else None
        if source:
            return compacted, source
    return None


def _read_and_analyze(bucket, audio, settings: Settings) -> dict:
    # Pinned to the generation just seen: an object erased or rewritten meanwhile is a
    # NotFound here (the bucket keeps no old generations), never a mix of two.
    with bucket.blob(audio.name, generation=audio.generation).open("rb", chunk_size=READ_BYTES) as stream:
        if audio.name.endswith(COMPACTED_SUFFIXES):
            return analyze_compacted(stream, settings.aggressiveness)
        return analyze(stream, settings.aggressiveness)


def _describes(sidecar, generation: str) -> bool:
    metadata = (sidecar.metadata or {}) if sidecar is not None else {}
    return metadata.get("wav_generation") == generation and metadata.get("vad_version") == str(VERSION)


def _gone_or_changed(bucket, name: str, generation: str) -> None:
    if recording_audio(bucket, name) is None:
        log("INFO", "vad_recording_gone", name=name, generation=generation)
        return
    log("WARNING", "vad_recording_changed", name=name, generation=generation)
    raise RecordingChanged(f"{name} changed while it was analyzed; the retry takes the new generation")


def _delete_quietly(blob) -> None:
    try:
        blob.delete(if_generation_match=blob.generation)  # ours only, not a newer one
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass


# --- `python vad_consumer.py gs://BUCKET/recordings/...wav`: try it locally --------------


def main(argv: list[str] | None = None) -> int:
    """Analyze recordings by URI and print their sidecars: on STORAGE_EMULATOR_HOST if
    set, else on the receiver's local stack if it is up (`make up`), else on Cloud Storage
    with application-default credentials. VAD_AGGRESSIVENESS applies as in the function."""
    uris = sys.argv[1:] if argv is None else argv
    if not uris or any(not u.startswith("gs://") for u in uris):
        print("usage: python vad_consumer.py gs://BUCKET/recordings/<uid>/<day>/<start>.wav ...", file=sys.stderr)
        return 2
    if "STORAGE_EMULATOR_HOST" not in os.environ:
        host = _local_stack_storage()
        if host:
            os.environ["STORAGE_EMULATOR_HOST"] = host
    for uri in uris:
        bucket, _, name = uri[len("gs://") :].partition("/")
        body = process(bucket, name, instance_settings())
        print(json.dumps(body, indent=1) if body else f"{uri}: nothing written (see the log line above)")
    return 0


def _local_stack_storage() -> str | None:
    """fake-gcs-server of the receiver's local stack, when this runs inside the receiver's
    repository with the stack up; None anywhere else (a copy of this folder, say)."""
    try:
        from omi_receiver.devtools import stack
    except ImportError:
        return None
    try:
        return stack.read_env().get("STORAGE_EMULATOR_HOST")
    except stack.StackError:
        return None


if __name__ == "__main__":
    sys.exit(main())
