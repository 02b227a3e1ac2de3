"""Example downstream consumer: voice activity detection on every finished recording.

Subscribed to the recordings topic (examples/vad/main.py: analyze_recording), it streams the WAV from
Cloud Storage, runs webrtcvad on 30 ms frames and writes a JSON sidecar next to it,
`recordings/<uid>/<day>/<start>.vad.json`: speech ratio and speech segments.
docs/consumers.md explains the pattern; copy it to hang ASR or embeddings on the pipeline.

* Streams, never loads: the WAV is read READ_BYTES at a time (a 60-minute recording at
  16 kHz is ~115 MB), so memory stays flat however long the recording.
* Idempotent: events are at-least-once and repeated. The sidecar names the WAV generation
  it describes; a repeat finds it and does nothing; a write is generation-checked.
* Erase-safe: a WAV that is gone is a no-op, and a sidecar written while the WAV was being
  erased is deleted again (see `process`).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import BinaryIO, Iterable, Iterator

import webrtcvad
from google.api_core import exceptions

from omi_receiver.runtime import clients, logs, wav
from omi_receiver.runtime.config import ConfigError
from omi_receiver.runtime.contract import format_time, now_us
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX

VERSION = 1  # of the sidecar's content; a new version re-analyzes on the next event
SIDECAR_SUFFIX = ".vad.json"  # replaces the WAV's ".wav"

RATES = (8000, 16000, 32000, 48000)  # what webrtcvad accepts; others get a "skipped" sidecar
FRAME_MS = 30  # webrtcvad takes 10, 20 or 30 ms frames; 30 gives the steadiest decisions
# Smoothing of the per-frame decisions, in this order:
MAX_PAUSE_MS = 300  # 1. pauses up to this long inside speech are bridged (breaths, stops)
MIN_SPEECH_MS = 90  # 2. speech shorter than this is dropped (clicks, bumps on the mic)
READ_BYTES = 4 * 2**20  # one ranged download; the analysis holds a few such blocks at most

# VAD_AGGRESSIVENESS: webrtcvad's mode, 0 (keeps the most audio as speech) to 3 (filters
# non-speech hardest). Read once per instance.
DEFAULT_AGGRESSIVENESS = 2
_aggressiveness: int | None = None


class BadEvent(ValueError):
    """An event that can never be processed: logged and acknowledged, not retried."""


class RecordingChanged(Exception):
    """The WAV was rewritten while we read it: raise, so Pub/Sub redelivers the event."""


def aggressiveness_from(environ) -> int:
    raw = environ.get("VAD_AGGRESSIVENESS") or str(DEFAULT_AGGRESSIVENESS)
    if raw not in ("0", "1", "2", "3"):
        raise ConfigError(f"VAD_AGGRESSIVENESS={raw!r} must be 0, 1, 2 or 3")
    return int(raw)


def aggressiveness() -> int:
    global _aggressiveness
    if _aggressiveness is None:
        _aggressiveness = aggressiveness_from(os.environ)
    return _aggressiveness


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
            yield data[offset:offset + frame_bytes]
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
        rate, data_bytes = wav.parse_header(stream.read(wav.HEADER_BYTES))
    except ValueError as exc:
        return {"skipped": f"not a PCM16 mono WAV: {exc}"}
    seconds = data_bytes / (2 * rate)
    result = {"sample_rate": rate, "duration_seconds": round(seconds, 3)}
    if rate not in RATES:
        return {**result, "skipped": f"webrtcvad supports {', '.join(map(str, RATES))} Hz, not {rate} Hz"}
    vad = webrtcvad.Vad(mode)
    frame_bytes = 2 * rate * FRAME_MS // 1000
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
    if not (isinstance(bucket, str) and bucket and isinstance(name, str)
            and name.startswith(RECORDINGS_PREFIX) and name.endswith(".wav")):
        raise BadEvent(f"not a recording: bucket={bucket!r} name={name!r}")
    return bucket, name


def handle_event(cloud_event) -> dict | None:
    """Entry point (examples/vad/main.py: analyze_recording). Returns the sidecar written, if any. Raises
    only on what a redelivery can heal."""
    try:
        bucket, name = decode(cloud_event)
    except BadEvent as exc:
        logs.error("vad_bad_event", error=str(exc))
        return None
    return process(bucket, name)


def process(bucket_name: str, name: str) -> dict | None:
    """Write the sidecar of gs://bucket_name/name once per WAV generation; returns it, or
    None when there was nothing to write (erased, already done)."""
    started = time.monotonic()
    bucket = clients.storage_client().bucket(bucket_name)
    recording = bucket.get_blob(name)
    if recording is None:
        logs.info("vad_recording_gone", name=name)  # erased: nothing to do
        return None
    generation = str(recording.generation)
    sidecar = bucket.get_blob(sidecar_name(name))
    if _describes(sidecar, generation):
        logs.info("vad_already_done", name=name, generation=generation)  # a repeated event
        return None

    try:
        # Pinned to the generation just seen: a WAV erased or rewritten meanwhile is a
        # NotFound here (the bucket keeps no old generations), never a mix of two.
        with bucket.blob(name, generation=recording.generation).open("rb", chunk_size=READ_BYTES) as stream:
            result = analyze(stream, aggressiveness())
    except exceptions.NotFound:
        return _gone_or_changed(bucket, name, generation)

    body = {"recording": name, "bucket": bucket_name, "generation": generation, **result,
            "analyzed_at": format_time(now_us()), "version": VERSION}
    written = bucket.blob(sidecar_name(name))
    written.metadata = {"wav_generation": generation, "vad_version": str(VERSION)}
    try:
        # Only over the sidecar we saw (0: none): two deliveries racing write it once.
        written.upload_from_string(json.dumps(body), content_type="application/json",
                                   if_generation_match=sidecar.generation if sidecar else 0)
    except exceptions.PreconditionFailed:
        if _describes(bucket.get_blob(sidecar_name(name)), generation):
            logs.info("vad_already_done", name=name, generation=generation)
            return None
        raise  # it describes another generation: let the retry sort it out

    # Erase race: an eraser that listed the recording's objects before this sidecar
    # existed would leave it behind. The WAV still being there now means the eraser has
    # not deleted it yet, and it lists the sidecars again after that (docs/consumers.md).
    current = bucket.get_blob(name)
    if current is None or str(current.generation) != generation:
        _delete_quietly(written)
        return _gone_or_changed(bucket, name, generation)

    if "skipped" in body:
        logs.warning("vad_skipped", name=name, reason=body["skipped"])
    else:
        logs.info("vad_analyzed", name=name, generation=generation, duration_seconds=body["duration_seconds"],
                  speech_ratio=body["speech_ratio"], segments=len(body["segments"]),
                  latency_ms=round((time.monotonic() - started) * 1000))
    return body


def _describes(sidecar, generation: str) -> bool:
    metadata = (sidecar.metadata or {}) if sidecar is not None else {}
    return metadata.get("wav_generation") == generation and metadata.get("vad_version") == str(VERSION)


def _gone_or_changed(bucket, name: str, generation: str) -> None:
    if bucket.get_blob(name) is None:
        logs.info("vad_recording_gone", name=name, generation=generation)
        return None
    logs.warning("vad_recording_changed", name=name, generation=generation)
    raise RecordingChanged(f"{name} changed while it was analyzed; the retry takes the new generation")


def _delete_quietly(blob) -> None:
    try:
        blob.delete(if_generation_match=blob.generation)  # ours only, not a newer one
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass


# --- `python examples/vad/vad_consumer.py gs://BUCKET/recordings/...wav`: try it locally ----------


def main(argv: list[str] | None = None) -> int:
    """Analyze recordings by URI and print their sidecars: on STORAGE_EMULATOR_HOST if
    set, else on the running local stack (`make up`), else on Cloud Storage itself."""
    uris = sys.argv[1:] if argv is None else argv
    if not uris or any(not u.startswith("gs://") for u in uris):
        print("usage: python examples/vad/vad_consumer.py gs://BUCKET/recordings/<uid>/<day>/<start>.wav ...", file=sys.stderr)
        return 2
    if "STORAGE_EMULATOR_HOST" not in os.environ:
        from omi_receiver.devtools import stack

        try:
            os.environ["STORAGE_EMULATOR_HOST"] = stack.read_env()["STORAGE_EMULATOR_HOST"]
        except stack.StackError:
            pass  # no local stack: real Cloud Storage with application-default credentials
    for uri in uris:
        bucket, _, name = uri[len("gs://"):].partition("/")
        body = process(bucket, name)
        print(json.dumps(body, indent=1) if body else f"{uri}: nothing written (see the log line above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
