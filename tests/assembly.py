"""Helpers for assembler tests: make chunks, publish them, read recordings back."""

from __future__ import annotations

import functools
import io
import types
import uuid
import wave
from pathlib import Path

import numpy as np
import soundfile

from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX
from omi_receiver.runtime.codec import Encoding
from omi_receiver.runtime.contract import Chunk, now_us

SPEECH = Path(__file__).resolve().parents[1] / "samples" / "speech-16k.wav"


class Killed(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the code runs."""


class KillAt:
    """Store hook that kills the pass at the n-th storage request (1-based)."""

    def __init__(self, n: int):
        self.n = n
        self.calls: list[str] = []

    def __call__(self, step: str) -> None:
        self.calls.append(step)
        if len(self.calls) == self.n:
            raise Killed(f"killed at request {self.n} ({step})")


class Clock:
    """A settable clock (microseconds) so tests can jump past leases and session gaps."""

    def __init__(self, start_us: int | None = None):
        self.now = start_us if start_us is not None else now_us()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1_000_000)


def pcm(n_bytes: int, seed: int) -> bytes:
    """Distinct, recognisable PCM16 content per chunk."""
    rng = np.random.default_rng(seed)
    return rng.integers(-20000, 20000, n_bytes // 2, dtype=np.int16).tobytes()


def stream(
    uid: str,
    n: int,
    *,
    rate: int = 16000,
    seconds: float = 1.0,
    start_us: int,
    step_s: float | None = None,
    seed: int = 0,
) -> list[Chunk]:
    """n chunks of `seconds` audio each, received `step_s` apart (default: real time)."""
    step = seconds if step_s is None else step_s
    size = int(rate * seconds) * 2
    return [
        Chunk(uid, rate, start_us + int((i + 1) * step * 1_000_000), uuid.uuid4().hex, pcm(size, seed * 100_000 + i))
        for i in range(n)
    ]


@functools.cache
def _speech() -> bytes:
    with wave.open(str(SPEECH)) as w:
        return w.readframes(w.getnframes())


def speech_stream(uid: str, n: int, *, start_us: int, rate: int = 16000, first_second: int = 0) -> list[Chunk]:
    """n 1-second chunks of real speech (samples/, read at `rate`), received 1 s apart:
    content FLAC shrinks, unlike stream()'s noise."""
    pcm, size = _speech(), rate * 2
    return [
        Chunk(uid, rate, start_us + (i + 1) * 1_000_000, uuid.uuid4().hex, pcm[(first_second + i) * size :][:size])
        for i in range(n)
    ]


def publish(config, chunks: list[Chunk], encoding: Encoding | None = None) -> None:
    """Publish to the chunks topic with no ordering key, as ingest does. `encoding` None:
    the body as is without an `encoding` attribute (what older ingest sent); otherwise
    encoded as ingest encodes (Chunk.message; FLAC only where it pays)."""
    publisher = clients.publisher()
    topic = config.topic_path(config.chunks_topic)
    messages = [(c.data, c.attributes()) if encoding is None else c.message(encoding, wait=True) for c in chunks]
    futures = [publisher.publish(topic, data, **attributes) for data, attributes in messages]
    for f in futures:
        f.result(timeout=30)


def drain(assembler, max_passes: int = 30):
    """Run passes until one pulls nothing; returns the pass stats."""
    passes = []
    for _ in range(max_passes):
        stats = assembler.run_pass()
        passes.append(stats)
        if stats.pulled == 0:
            return passes
    raise AssertionError(f"subscription not drained after {max_passes} passes")


def recordings(config, uid: str) -> list[tuple[str, bytes, dict]]:
    """(name, object bytes, metadata) of every .wav under the user's prefix, by name."""
    storage = clients.storage_client()
    out = []
    for blob in storage.list_blobs(config.recordings_bucket, prefix=f"{RECORDINGS_PREFIX}{uid}/"):
        if not blob.name.endswith(".wav"):
            continue  # a consumer's sidecar
        out.append((blob.name, blob.download_as_bytes(), blob.metadata or {}))
    return sorted(out)


def audio_of(blob: bytes, rate: int) -> bytes:
    """The PCM data of a WAV, checked by both `wave` and soundfile."""
    with wave.open(io.BytesIO(blob)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, rate)
        frames = w.readframes(w.getnframes())
    data, sr = soundfile.read(io.BytesIO(blob), dtype="int16")
    assert sr == rate and data.tobytes() == frames
    return frames


def joined(chunks: list[Chunk]) -> bytes:
    return b"".join(c.data for c in chunks)


class PullSpy:
    """A subscriber that remembers the ack ids of every message it pulled, so a test can
    let them expire (the ack deadline, forced rather than waited for)."""

    def __init__(self, subscriber):
        self._subscriber = subscriber
        self.ack_ids: list[str] = []

    def pull(self, *args, **kwargs):
        response = self._subscriber.pull(*args, **kwargs)
        self.ack_ids.extend(m.ack_id for m in response.received_messages)
        return response

    def __getattr__(self, name):
        return getattr(self._subscriber, name)

    def expire(self, subscription: str) -> None:
        self._subscriber.modify_ack_deadline(
            request={"subscription": subscription, "ack_ids": self.ack_ids, "ack_deadline_seconds": 0}
        )


class NothingWaiting:
    """A subscriber whose every pull comes back empty, as a cold channel's may while
    messages wait."""

    def pull(self, *args, **kwargs):
        return types.SimpleNamespace(received_messages=[])
