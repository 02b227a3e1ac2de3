"""What is sent when: the audio cut into POST bodies (`Piece`), grouped into the batches the
sender releases together (`Batch`, a burst of back-to-back POSTs), and the `Pacer` that
holds each batch until its audio has been "recorded", with a device's pause in between.

Differences from the real sender, on purpose: the last partial interval is sent (the real
sender never sends the last partial interval of a conversation); a batch is exactly X
seconds, not "a bit more".
"""

from __future__ import annotations

import dataclasses
import threading
import time

from omi_receiver.devtools.simulate.options import Mode, Options, UsageError
from omi_receiver.runtime.contract import BYTES_PER_SAMPLE


@dataclasses.dataclass(frozen=True)
class Piece:
    """One POST body: pcm[start:end], the `seq`-th chunk of the stream."""

    seq: int
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class Batch:
    """Chunks released together once `release` bytes of audio have been recorded."""

    release: int
    pieces: tuple[Piece, ...]
    after_pause: bool


def plan(
    total_bytes: int,
    sample_rate: int,
    mode: Mode | str,
    interval: float,
    pause_after: float | None = None,
) -> list[Batch]:
    """Split `total_bytes` of audio into batches of POST bodies, in sending order.

    current: 1-s chunks (only the stream's last chunk shorter), grouped into batches of
    `interval` seconds of audio. legacy: one chunk of `interval` seconds per batch.
    With `pause_after`, the stream is cut there (rounded up to a whole chunk in current
    mode) and batching restarts after the pause, as after a device reconnect; in legacy
    mode the batch before the pause is shorter.
    """
    batch_bytes = max(1, round(interval * sample_rate)) * BYTES_PER_SAMPLE
    chunk_bytes = sample_rate * BYTES_PER_SAMPLE if mode == Mode.CURRENT else batch_bytes
    batches: list[Batch] = []
    seq = 0
    for index, (seg_start, seg_end) in enumerate(_segments(total_bytes, sample_rate, chunk_bytes, mode, pause_after)):
        grouped: dict[int, list[Piece]] = {}
        for start in range(seg_start, seg_end, chunk_bytes):
            end = min(start + chunk_bytes, seg_end)
            release = min(seg_start + -(-(end - seg_start) // batch_bytes) * batch_bytes, seg_end)
            grouped.setdefault(release, []).append(Piece(seq, start, end))
            seq += 1
        batches += [Batch(r, tuple(p), index > 0) for r, p in grouped.items()]
    return batches


def _segments(
    total_bytes: int, sample_rate: int, chunk_bytes: int, mode: Mode | str, pause_after: float | None
) -> list[tuple[int, int]]:
    """The stretches of audio between pauses: one, or two around `pause_after`."""
    if pause_after is None:
        return [(0, total_bytes)]
    cut = round(pause_after * sample_rate) * BYTES_PER_SAMPLE
    if mode == Mode.CURRENT:
        cut = -(-cut // chunk_bytes) * chunk_bytes
    return [(0, cut), (cut, total_bytes)] if 0 < cut < total_bytes else [(0, total_bytes)]


def span(pcm: bytes, sample_rate: int, options: Options) -> memoryview:
    """The part of `pcm` the stream sends (`start_offset`, `max_seconds`), without a copy."""
    first = round(options.start_offset * sample_rate) * BYTES_PER_SAMPLE
    last = len(pcm)
    if options.max_seconds is not None:
        last = min(last, first + round(options.max_seconds * sample_rate) * BYTES_PER_SAMPLE)
    if pcm and first >= len(pcm):
        raise UsageError(f"start offset {options.start_offset} s is beyond the end of the audio")
    return memoryview(pcm)[first:last]


class Pacer:
    """Holds each batch until the sender would release it.

    Paced (the default), a batch goes out when its audio has been "recorded":
    `start + (audio position at the end of the batch) / speed` - real time at speed 1, the
    way the backend buffers X seconds before sending. `fast` sends at once. A pause (the
    first batch after `after_pause`) shifts the recording clock and waits `pause_for`
    wall-clock seconds, also when fast.
    """

    def __init__(self, options: Options, sample_rate: int, stop: threading.Event):
        self.options, self.stop = options, stop
        self.second = sample_rate * BYTES_PER_SAMPLE
        self.origin = time.monotonic()  # wall time at which audio position 0 was "recorded"
        self._paused = False

    def wait_for(self, batch: Batch) -> None:
        """Until `batch` is due, or the stream is stopped."""
        now = time.monotonic()
        pause_starts = batch.after_pause and not self._paused
        self._paused = batch.after_pause
        if pause_starts:  # device disconnect: nothing is recorded or sent for a while
            self.origin += self.options.pause_for
        due = now if self.options.fast else self.origin + batch.release / self.second / self.options.speed
        if pause_starts:
            due = max(due, now + self.options.pause_for)
        if due > now:
            self.stop.wait(due - now)
