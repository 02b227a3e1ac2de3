"""The 44-byte RIFF/WAVE header for PCM16 mono audio."""

from __future__ import annotations

import struct

HEADER_BYTES = 44
MAX_DATA_BYTES = 0xFFFFFFFF - 36  # RIFF sizes are 32-bit


def header(sample_rate: int, data_bytes: int) -> bytes:
    """Header for `data_bytes` of PCM16 LE mono at `sample_rate`; sizes exact."""
    if data_bytes < 0 or data_bytes % 2 or data_bytes > MAX_DATA_BYTES:
        raise ValueError(f"invalid PCM16 data size {data_bytes}")
    channels, bits = 1, 16
    block_align = channels * bits // 8
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        bits,
        b"data",
        data_bytes,
    )


def parse_header(blob: bytes) -> tuple[int, int]:
    """(sample_rate, data_bytes) of a header written by `header`; raises ValueError."""
    if len(blob) < HEADER_BYTES:
        raise ValueError("short WAV header")
    (riff, riff_size, wave, fmt, fmt_size, fmt_tag, channels, rate, byte_rate, align, bits, data, data_size) = (
        struct.unpack("<4sI4s4sIHHIIHH4sI", blob[:HEADER_BYTES])
    )
    if (riff, wave, fmt, data) != (b"RIFF", b"WAVE", b"fmt ", b"data"):
        raise ValueError("not a canonical PCM WAV header")
    if (fmt_size, fmt_tag, channels, bits) != (16, 1, 1, 16) or riff_size != 36 + data_size:
        raise ValueError("not a PCM16 mono header with exact sizes")
    return rate, data_size
