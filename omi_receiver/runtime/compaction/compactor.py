"""One finished recording's compaction: WAV in Cloud Storage -> verified FLAC or Opus next
to it -> the WAV deleted. Every step is safe to repeat (the event comes at least once).

  1. read the WAV's metadata (generation g); gone -> done
  2. a compacted sibling that says `source_generation` = g was verified against this very
     WAV by an earlier delivery -> only step 5 is left
  3. stream the WAV pinned to g into the encoder (a local temporary file), decode and
     compare (codec.py); a failure keeps the WAV, logs an error and acknowledges
  4. upload `<start>.flac|.opus` with the WAV's metadata plus source_generation, over
     nothing (if_generation_match=0) or over the stale sibling seen in step 2
  5. delete the WAV with if_generation_match=g: a WAV rewritten meanwhile (a repeated
     finalization) is kept, and the error makes Eventarc redeliver for the new generation

Erase race: an eraser deletes the WAV and then lists the recording's stem again
(ops/erase.py), so a sibling uploaded before that second listing is erased with it. One
uploaded after it finds the WAV gone in step 5, or, when that delivery died before step 5,
the next delivery finds it gone in step 1; either way the user's state tells an erase (an
erase marker newer than the recording's start) from another delivery of ours having
finished first, and an erased recording's sibling is deleted again.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import tempfile
import time
from pathlib import Path

from google.api_core import exceptions

from .. import logs, wav
from ..assembler.recording import RECORDINGS_PREFIX, UserState, state_name
from ..contract import BYTES_PER_SAMPLE, InvalidChunk, parse_time
from . import codec
from .settings import Format, Settings

WAV_SUFFIX = ".wav"
# Every file a recording can be, by suffix: the assembler's WAV or what compaction made of it.
RECORDING_FORMATS = {WAV_SUFFIX: "wav", **{f.suffix: f.value for f in Format if f is not Format.OFF}}
# Custom metadata the compacted object adds to the WAV's (which it carries over unchanged).
SOURCE_GENERATION = "source_generation"  # the WAV generation it was verified against
PCM_BYTES = "pcm_bytes"  # the WAV's data size: the exact duration, for listings
COMPACTION = "compaction"  # "flac" or "opus"
# Bounds of what one run compacts; a longer recording keeps its WAV (logged). The encoded
# file sits in /tmp, which is memory on Cloud Run: FLAC of speech is ~60 % of the WAV, so
# 600 MB of WAV (5.2 h at 16 kHz) stays within a 1 GiB instance. libopus needs ~215 CPU
# seconds per audio hour (measured): 2 h fits the 540 s an event-driven function may run.
MAX_WAV_BYTES = 600_000_000
MAX_SECONDS = {Format.FLAC: 6 * 3600, Format.OPUS: 2 * 3600}


class BadEvent(ValueError):
    """An event that can never be processed: logged and acknowledged, not retried."""


class WavChanged(Exception):
    """The WAV was rewritten while we compacted it: raise, so the event is redelivered."""


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
        and name.endswith(WAV_SUFFIX)
    ):
        raise BadEvent(f"not a recording: bucket={bucket!r} name={name!r}")
    return bucket, name


def compacted_name(wav_name: str, fmt: Format) -> str:
    return wav_name.removesuffix(WAV_SUFFIX) + fmt.suffix


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a run did, for tests and the log."""

    result: str  # done, already_done, gone, off, failed, skipped
    target: str | None = None


class Compactor:
    def __init__(self, client, settings: Settings):
        self.client = client
        self.settings = settings

    def compact(self, bucket_name: str, name: str) -> Outcome:
        fmt = self.settings.format
        if fmt is Format.OFF:
            return Outcome("off")
        started, cpu = time.monotonic(), time.process_time()
        bucket = self.client.bucket(bucket_name)
        target = compacted_name(name, fmt)
        recording = bucket.get_blob(name)
        sibling = bucket.get_blob(target)
        if recording is None:
            if sibling is None:
                logs.info("compaction_gone", name=name, target=target)
                return Outcome("gone", target)
            return self._wav_gone(sibling, name)
        generation = recording.generation
        if sibling is None or (sibling.metadata or {}).get(SOURCE_GENERATION) != str(generation):
            skipped = self._not_for_compaction(recording, fmt)
            if skipped:
                logs.warning("compaction_skipped", name=name, reason=skipped)
                return Outcome("skipped")
            try:
                sibling = self._encode_and_upload(bucket, recording, target, fmt, sibling)
            except (codec.NotCompactable, codec.VerificationFailed) as exc:
                # Never retried: the same bytes would fail the same way. The WAV stays.
                logs.error("compaction_failed", name=name, format=fmt.value, error=str(exc))
                return Outcome("failed")
            except exceptions.NotFound:  # erased or rewritten while it was read
                return self._gone_or_changed(bucket, name, target, generation)
        outcome = self._delete_wav(bucket, recording, sibling)
        if outcome.result == "done":
            logs.info(
                "compaction_done",
                name=name,
                target=target,
                format=fmt.value,
                wav_bytes=recording.size,
                bytes=sibling.size,
                ratio=round((recording.size or 0) / max(1, sibling.size or 1), 2),
                cpu_ms=round((time.process_time() - cpu) * 1000),
                latency_ms=round((time.monotonic() - started) * 1000),
            )
        return outcome

    def _not_for_compaction(self, recording, fmt: Format) -> str | None:
        """Why this WAV is left as it is (logged), or None."""
        if (recording.metadata or {}).get("status") == "open":  # events name final WAVs only
            return "the recording is still open: the assembler may append to it"
        rate = int((recording.metadata or {}).get("sample_rate") or 16000)
        seconds = max(0, (recording.size or 0) - wav.HEADER_BYTES) / (BYTES_PER_SAMPLE * rate)
        if (recording.size or 0) > MAX_WAV_BYTES or seconds > MAX_SECONDS[fmt]:
            return (
                f"{recording.size} bytes ({seconds / 3600:.1f} h) is over what one run compacts to "
                f"{fmt.value} ({MAX_WAV_BYTES} bytes, {MAX_SECONDS[fmt] / 3600:.0f} h)"
            )
        return None

    def _encode_and_upload(self, bucket, recording, target: str, fmt: Format, stale):
        """Encode, verify, upload; returns the compacted object. Raises codec's errors."""
        with tempfile.TemporaryDirectory(prefix="compaction-") as folder:
            path = Path(folder) / f"audio{fmt.suffix}"
            # Pinned to the generation seen: a WAV erased or rewritten meanwhile answers
            # NotFound (the bucket keeps no old generations) rather than mixing two files.
            pinned = bucket.blob(recording.name, generation=recording.generation)
            with pinned.open("rb", chunk_size=codec.READ_BYTES) as stream:
                source = codec.encode(stream, path, fmt)
            checked = codec.verify(path, fmt, source)
            blob = bucket.blob(target)
            blob.metadata = {
                **(recording.metadata or {}),
                SOURCE_GENERATION: str(recording.generation),
                PCM_BYTES: str(source.data_bytes),
                COMPACTION: fmt.value,
                "compacted_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            }
            try:
                blob.upload_from_filename(
                    str(path),
                    content_type=fmt.content_type,
                    if_generation_match=stale.generation if stale is not None else 0,
                )
            except exceptions.PreconditionFailed:
                # Another delivery uploaded first: fine if it describes this WAV too.
                blob = bucket.get_blob(target)
                if blob is None or (blob.metadata or {}).get(SOURCE_GENERATION) != str(recording.generation):
                    raise
            logs.info(
                "compaction_verified",
                name=recording.name,
                format=fmt.value,
                samples=checked.samples,
                envelope_db=checked.envelope_db_mean_diff,
            )
            return blob

    def _delete_wav(self, bucket, recording, sibling) -> Outcome:
        try:
            # Only the generation that was compacted: a WAV rewritten since is kept.
            bucket.blob(recording.name).delete(if_generation_match=recording.generation)
        except exceptions.PreconditionFailed:
            logs.warning("compaction_wav_changed", name=recording.name, generation=str(recording.generation))
            raise WavChanged(f"{recording.name} was rewritten; the retry compacts the new generation") from None
        except exceptions.NotFound:
            return self._wav_gone(sibling, recording.name)
        return Outcome("done", sibling.name)

    def _wav_gone(self, sibling, name: str) -> Outcome:
        """The WAV is gone and its compacted copy is there: another delivery of ours
        finished, or an erase deleted the WAV after listing the stem before the copy was
        uploaded (then the copy is the erased user's audio, and goes too)."""
        if self._erased(sibling):
            _delete_quietly(sibling)
            logs.info("compaction_gone", name=name, target=sibling.name, erased=True)
            return Outcome("gone", sibling.name)
        logs.info("compaction_already_done", name=name, target=sibling.name)
        return Outcome("already_done", sibling.name)

    def _erased(self, copy) -> bool:
        """Whether the user was erased after this recording started (the erase marker in
        their state): then the WAV was deleted by the erase, not by another delivery.
        `copy` is the compacted object, which carries the WAV's metadata."""
        uid = copy.name[len(RECORDINGS_PREFIX) :].split("/", 1)[0]
        state = copy.bucket.get_blob(state_name(uid))
        if state is None:
            return True  # no state at all: nothing of this user is kept
        try:
            erased_before = UserState.from_json(state.download_as_bytes()).erased_before_us
            start = parse_time((copy.metadata or {}).get("start", ""))
        except (ValueError, KeyError, InvalidChunk):
            return False
        return start < erased_before

    def _gone_or_changed(self, bucket, name: str, target: str, generation: int) -> Outcome:
        current = bucket.get_blob(name)
        if current is None:
            logs.info("compaction_gone", name=name, target=target)
            return Outcome("gone", target)
        logs.warning("compaction_wav_changed", name=name, generation=str(generation))
        raise WavChanged(f"{name} changed while it was compacted; the retry takes the new generation")


def _delete_quietly(blob) -> None:
    try:
        blob.delete(if_generation_match=blob.generation)  # ours only, not a newer one
    except (exceptions.NotFound, exceptions.PreconditionFailed):
        pass
