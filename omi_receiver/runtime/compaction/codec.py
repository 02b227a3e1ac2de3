"""Encoding a PCM16 mono WAV to FLAC or Opus, and checking the result, block by block.

Pure over streams and local files (no Cloud Storage here), so it is tested without it.
`encode` reads the WAV once, READ_BYTES at a time, feeding the encoder and noting what the
check needs (a SHA-256 of the PCM, and its loudness every 100 ms); `verify` decodes the
encoded file block by block and compares. Memory follows the block and the encoded file,
never the recording.

* FLAC: the decoded PCM must be byte-identical to the WAV's (same SHA-256, same length).
* Opus is lossy, so the check is a sanity bound: the same sample rate, the same number of
  samples give or take one 20 ms frame, and a loudness envelope (RMS per 100 ms, in dB,
  floored at -80 dBFS) within OPUS_MAX_ENVELOPE_DB on average. Measured at
  OPUS_COMPRESSION_LEVEL: samples/speech-16k.wav 0.7 dB, white noise 2.6 dB (Opus codes
  noise by its band energies), digital silence 0; against the speech sample, the same audio
  shifted by 0.5 s is 16.7 dB off, reversed 15.6, at half the gain 5.5, all zeros 52.

soundfile (libsndfile) is imported on first use: importing this package loads nothing of
it (ingest and the assembler load it for FLAC chunks only, through runtime/codec.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import BinaryIO

from .. import wav
from ..contract import BYTES_PER_SAMPLE
from .settings import Format

READ_BYTES = 4 * 2**20  # one ranged download (and one decoded block) at a time
# libsndfile maps compression_level 0..1 onto Opus's target bitrate (high..low). 0.95 gives
# ~18 kbit/s VBR on 16 kHz speech (measured: 7.96 MB per hour, 14.5x below the WAV), inside
# the 16-20 kbit/s Opus recommends for wideband speech.
OPUS_COMPRESSION_LEVEL = 0.95
FLAC_COMPRESSION_LEVEL = 0.5  # libsndfile's default; 1.0 saves 3 % more for 3x the CPU
ENVELOPE_WINDOWS_PER_SECOND = 10
ENVELOPE_FLOOR_DB = -80.0
OPUS_MAX_ENVELOPE_DB = 4.0
OPUS_FRAME_SECONDS = 0.02


class NotCompactable(ValueError):
    """The object is not a WAV this can compact (not PCM16 mono, shorter than its header says)."""


class VerificationFailed(ValueError):
    """The encoded file does not decode to the recording: it must not replace the WAV."""


def _soundfile():
    import soundfile

    return soundfile


class Envelope:
    """Mean square of int16 samples per window, fed block by block (partial windows carried)."""

    def __init__(self, window: int):
        self.window = window
        self.squares: list[float] = []
        self._sum = 0.0
        self._count = 0

    def add(self, samples) -> None:
        import numpy as np

        x = samples.astype(np.float64)
        start = 0
        if self._count:
            take = min(self.window - self._count, len(x))
            self._sum += float(np.dot(x[:take], x[:take]))
            self._count += take
            start = take
            if self._count == self.window:
                self._close()
        whole = (len(x) - start) // self.window * self.window
        if whole:
            body = x[start : start + whole].reshape(-1, self.window)
            self.squares.extend((np.einsum("ij,ij->i", body, body) / self.window).tolist())
        rest = x[start + whole :]
        if len(rest):
            self._sum, self._count = float(np.dot(rest, rest)), len(rest)

    def _close(self) -> None:
        self.squares.append(self._sum / self._count)
        self._sum, self._count = 0.0, 0

    def decibels(self) -> list[float]:
        """dBFS per window, the last partial window included."""
        squares = self.squares + ([self._sum / self._count] if self._count else [])
        floor = 10 ** (ENVELOPE_FLOOR_DB / 10)
        return [10 * math.log10(max(s / 32768.0**2, floor)) for s in squares]


@dataclasses.dataclass(frozen=True)
class Source:
    """What `encode` read: the WAV's format, its PCM's length and fingerprint."""

    sample_rate: int
    data_bytes: int
    sha256: str
    envelope_db: list[float]

    @property
    def samples(self) -> int:
        return self.data_bytes // BYTES_PER_SAMPLE


@dataclasses.dataclass(frozen=True)
class Verified:
    """The check's numbers, logged with the result."""

    samples: int
    envelope_db_mean_diff: float  # 0 for FLAC


def encode(stream: BinaryIO, target: Path, fmt: Format) -> Source:
    """Encode the WAV read from `stream` to `target` in `fmt`. Raises NotCompactable."""
    import numpy as np

    try:
        rate, data_bytes = wav.parse_header(stream.read(wav.HEADER_BYTES))
    except ValueError as exc:
        raise NotCompactable(f"not a PCM16 mono WAV: {exc}") from None
    if data_bytes % BYTES_PER_SAMPLE:
        raise NotCompactable(f"odd PCM16 data size {data_bytes}")
    sf = _soundfile()
    digest = hashlib.sha256()
    envelope = Envelope(max(1, rate // ENVELOPE_WINDOWS_PER_SECOND))
    left = data_bytes
    with _open_for_writing(sf, target, rate, fmt) as out:
        while left:
            block = stream.read(min(READ_BYTES, left))
            if not block:
                raise NotCompactable(f"the WAV ends {left} bytes before its header's data size {data_bytes}")
            if len(block) % BYTES_PER_SAMPLE:  # a short read mid-sample: complete it
                block += stream.read(1)
            left -= len(block)
            digest.update(block)
            samples = np.frombuffer(block, dtype="<i2")
            envelope.add(samples)
            out.write(samples)
    return Source(rate, data_bytes, digest.hexdigest(), envelope.decibels())


def _open_for_writing(sf, target: Path, rate: int, fmt: Format):
    if fmt is Format.FLAC:
        return sf.SoundFile(target, "w", rate, 1, "PCM_16", format="FLAC", compression_level=FLAC_COMPRESSION_LEVEL)
    if fmt is Format.OPUS:
        return sf.SoundFile(target, "w", rate, 1, "OPUS", format="OGG", compression_level=OPUS_COMPRESSION_LEVEL)
    raise ValueError(f"nothing to encode for {fmt}")


def verify(target: Path, fmt: Format, source: Source) -> Verified:
    """Decode `target` and compare with what `encode` read. Raises VerificationFailed."""
    sf = _soundfile()
    try:
        with sf.SoundFile(target) as encoded:
            if (encoded.samplerate, encoded.channels) != (source.sample_rate, 1):
                raise VerificationFailed(
                    f"decodes as {encoded.channels} channel(s) at {encoded.samplerate} Hz, "
                    f"not mono at {source.sample_rate} Hz"
                )
            if fmt is Format.FLAC:
                return _same_pcm(encoded, source)
            return _close_enough(encoded, source)
    except sf.LibsndfileError as exc:
        raise VerificationFailed(f"does not decode: {exc}") from None


def _same_pcm(encoded, source: Source) -> Verified:
    digest, samples = hashlib.sha256(), 0
    for block in encoded.blocks(READ_BYTES // BYTES_PER_SAMPLE, dtype="int16"):
        digest.update(block.astype("<i2", copy=False).tobytes())
        samples += len(block)
    if samples != source.samples or digest.hexdigest() != source.sha256:
        raise VerificationFailed(
            f"FLAC decodes to {samples} samples (sha256 {digest.hexdigest()[:16]}...), "
            f"not the WAV's {source.samples} (sha256 {source.sha256[:16]}...)"
        )
    return Verified(samples, 0.0)


def _close_enough(encoded, source: Source) -> Verified:
    envelope = Envelope(max(1, source.sample_rate // ENVELOPE_WINDOWS_PER_SECOND))
    samples = 0
    for block in encoded.blocks(READ_BYTES // BYTES_PER_SAMPLE, dtype="int16"):
        envelope.add(block)
        samples += len(block)
    frame = round(source.sample_rate * OPUS_FRAME_SECONDS)
    if abs(samples - source.samples) > frame:
        raise VerificationFailed(f"Opus decodes to {samples} samples, not {source.samples} (+-{frame})")
    diff = envelope_difference(source.envelope_db, envelope.decibels())
    if diff > OPUS_MAX_ENVELOPE_DB:
        raise VerificationFailed(f"Opus loudness differs from the WAV's by {diff:.1f} dB on average")
    return Verified(samples, round(diff, 3))


def envelope_difference(original: list[float], decoded: list[float]) -> float:
    """Mean absolute difference in dB over the windows both have (0 for no windows)."""
    n = min(len(original), len(decoded))
    if not n:
        return 0.0
    return sum(abs(a - b) for a, b in zip(original[:n], decoded[:n], strict=True)) / n
