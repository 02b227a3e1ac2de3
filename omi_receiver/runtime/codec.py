"""The chunk codec: the PCM of one accepted POST to what its Pub/Sub message carries, and back.

Pub/Sub bills every byte twice (publish and delivery). FLAC is lossless: on speech at
16 kHz a 1-second chunk shrinks to 0.585 of its PCM for ~1.1 ms of CPU to encode and verify
and ~0.5 ms to decode, ~25 times cheaper than the Pub/Sub bytes it saves (bench/codec.py;
docs/design.md, "The message contract"). Silence shrinks to almost nothing; white noise
does not shrink, and goes as PCM.

`encode` returns FLAC only when it saves at least MIN_SAVING and decodes back to exactly the
PCM it was given (checked on every chunk: what ingest acknowledged is what the recording
holds). Anything else (too little saved, any error, the library not loaded yet) returns the
PCM itself: still correct, just not smaller.

A FLAC payload always has an odd number of bytes (a 1-byte PADDING metadata block when the
stream is even): an assembler from before FLAC chunks reads any message as PCM16, which must
be even, so during an upgrade it dead-letters a FLAC chunk (recoverable with `dlq replay`)
instead of storing its bytes as audio (docs/deploy.md, "Upgrades").

soundfile (libsndfile) imports numpy: ~0.23 s (numpy ~0.18 s of it; main.py itself ~0.9 s),
which on a fractional-vCPU ingest instance would add seconds to a cold start's first request. So ingest calls `warm_up`
on its first request, which imports it on a background thread, and `encode` publishes PCM
until it is there (`wait=True` imports it at once instead: tools and tests). `decode`
imports it on first use (the assembler: no one waits on its cold start).
"""

from __future__ import annotations

import enum
import io
import threading

from . import logs

# FLAC only when it is at least this much smaller than the PCM: less is not worth a decode.
MIN_SAVING = 0.05
# libsndfile's FLAC compression level, 0..1 (x 8 = libFLAC's -0..-8). On 1-second speech
# chunks (encode alone): 0.75 (-6) makes 0.585 of the PCM in 0.48 ms of CPU, libsndfile's
# default 0.625 (-5) 0.601 in 0.32 ms: the extra 0.16 ms saves ten times its price in Pub/Sub
# bytes. 1.0 (-8) makes 0.5805 for 0.23 ms more: barely twice its price on paper, a margin
# smaller than the gap between this bench machine and a Cloud Run vCPU, and more latency on a
# fractional one (bench/codec.py).
COMPRESSION_LEVEL = 0.75
# No chunk holds more PCM than one Pub/Sub message (MAX_CHUNK_BYTES <= 10 MB, config.py): a
# payload claiming more is refused before it is decoded.
MAX_PCM_BYTES = 10_000_000
_BYTES_PER_SAMPLE = 2


class Encoding(enum.Enum):
    """What a chunk message's data is (attribute `encoding`; absent: PCM, as older ingest sent)."""

    PCM = "pcm"  # the PCM16 LE mono body, as posted
    FLAC = "flac"  # a FLAC stream, 16-bit mono, of that body


class CodecError(ValueError):
    """A payload that cannot be decoded into a chunk's PCM; `code` is machine-readable."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def parse_encoding(value: str | None) -> Encoding:
    """The `encoding` attribute; None (absent) means PCM. Anything unknown is a CodecError."""
    if value is None:
        return Encoding.PCM
    try:
        return Encoding(value)
    except ValueError:
        known = ", ".join(e.value for e in Encoding)
        raise CodecError("unknown_encoding", f"encoding {value[:40]!r} is not one of: {known}") from None


def encode(pcm: bytes, sample_rate: int, *, wait: bool = False) -> tuple[bytes, Encoding]:
    """The payload to publish for `pcm` (PCM16 LE mono, even length) and its encoding.

    FLAC when soundfile is loaded (or `wait`), it saves at least MIN_SAVING and it decodes
    back to `pcm` exactly; otherwise `(pcm, Encoding.PCM)`. Never raises for the audio.
    """
    sf = _soundfile(wait)
    if sf is None or not pcm:
        return pcm, Encoding.PCM
    try:
        payload = _write_flac(sf, pcm, sample_rate)
        if len(payload) > len(pcm) * (1 - MIN_SAVING):
            return pcm, Encoding.PCM  # noise: FLAC cannot shrink it
        if _read_flac(sf, payload, sample_rate) != pcm:
            raise CodecError("verify_failed", "the FLAC did not decode to the PCM it was made from")
    except Exception as exc:  # noqa: BLE001 - the PCM is always a correct payload
        _warn_once("chunk_encode_failed", exc)
        return pcm, Encoding.PCM
    return payload, Encoding.FLAC


def decode(payload: bytes, encoding: Encoding, sample_rate: int | None = None) -> bytes:
    """The PCM a payload carries. For FLAC, a stream that is not 16-bit mono (at
    `sample_rate`, when given), is corrupt, or holds more than MAX_PCM_BYTES is a CodecError.
    An ImportError (soundfile missing from the deployment) is not the message's fault and
    is left to propagate."""
    if encoding is Encoding.PCM:
        return bytes(payload)
    sf = _soundfile(wait=True)
    try:
        return _read_flac(sf, payload, sample_rate)
    except CodecError:
        raise
    except Exception as exc:  # noqa: BLE001 - libsndfile's errors for a broken stream vary
        raise CodecError("undecodable_payload", f"the FLAC payload cannot be decoded ({exc})"[:300]) from None


# --- libsndfile ----------------------------------------------------------------------------


def _write_flac(sf, pcm: bytes, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with sf.SoundFile(
        out,
        "w",
        samplerate=sample_rate,
        channels=1,
        format="FLAC",
        subtype="PCM_16",
        compression_level=COMPRESSION_LEVEL,
    ) as flac:
        flac.buffer_write(pcm, dtype="int16")  # from the bytes as they are: no array copy
    return _odd_length(out.getvalue())


# FLAC metadata block header: 1 byte (bit 7: last block; bits 0-6: type), 3 bytes of length.
_LAST_BLOCK, _PADDING = 0x80, 1


def _odd_length(stream: bytes) -> bytes:
    """`stream` with an odd number of bytes: as it is, or with a 1-byte PADDING block made
    the last metadata block (5 bytes: the parity flips). Any FLAC decoder skips padding."""
    if len(stream) % 2 or not stream.startswith(b"fLaC"):
        return stream
    pos = 4
    while not stream[pos] & _LAST_BLOCK:
        pos += 4 + int.from_bytes(stream[pos + 1 : pos + 4], "big")
    end = pos + 4 + int.from_bytes(stream[pos + 1 : pos + 4], "big")
    padding = bytes([_LAST_BLOCK | _PADDING]) + (1).to_bytes(3, "big") + b"\0"
    return stream[:pos] + bytes([stream[pos] & ~_LAST_BLOCK & 0xFF]) + stream[pos + 1 : end] + padding + stream[end:]


def _read_flac(sf, payload: bytes, sample_rate: int | None) -> bytes:
    with sf.SoundFile(io.BytesIO(payload)) as flac:
        if (flac.format, flac.subtype, flac.channels) != ("FLAC", "PCM_16", 1):
            raise CodecError(
                "undecodable_payload",
                f"expected FLAC 16-bit mono, got {flac.format} {flac.subtype} with {flac.channels} channel(s)",
            )
        if sample_rate is not None and flac.samplerate != sample_rate:
            raise CodecError(
                "sample_rate_mismatch",
                f"the FLAC payload is at {flac.samplerate} Hz, the message says {sample_rate}",
            )
        if not 0 < flac.frames <= MAX_PCM_BYTES // _BYTES_PER_SAMPLE:
            raise CodecError(
                "undecodable_payload", f"the FLAC payload claims {flac.frames} samples (1 to {MAX_PCM_BYTES // 2})"
            )
        pcm = bytes(flac.buffer_read(dtype="int16"))
    if len(pcm) != flac.frames * _BYTES_PER_SAMPLE:  # a stream cut short
        raise CodecError(
            "undecodable_payload", f"the FLAC payload holds {len(pcm) // 2} of the {flac.frames} samples it claims"
        )
    return pcm


# --- loading soundfile off the request path ------------------------------------------------

_sf = None  # the soundfile module, once imported
_loader: threading.Thread | None = None
_load_lock = threading.Lock()
_warned: set[str] = set()


def warm_up() -> None:
    """Start importing soundfile on a background thread, once per process; returns at once."""
    global _loader
    if _sf is not None or _loader is not None:
        return
    with _load_lock:
        if _loader is None:
            _loader = threading.Thread(target=_load_quietly, name="codec-import", daemon=True)
            _loader.start()


def ready() -> bool:
    """Whether `encode` can make FLAC without waiting."""
    return _sf is not None


def _soundfile(wait: bool):
    if _sf is not None or not wait:
        return _sf
    return _load()


def _load():
    global _sf
    import soundfile  # the import lock makes a concurrent load wait for this one

    _sf = soundfile
    return soundfile


def _load_quietly() -> None:
    try:
        _load()
    except Exception as exc:  # noqa: BLE001 - ingest goes on publishing PCM; say why once
        _warn_once("codec_unavailable", exc)


def _warn_once(event: str, exc: Exception) -> None:
    """One line per event and error type per instance: a failure that repeats on every
    chunk must not write a billed log line per chunk."""
    key = f"{event}:{type(exc).__name__}"
    if key in _warned:
        return
    _warned.add(key)
    logs.warning(event, error=type(exc).__name__, detail=str(exc)[:300], fallback="pcm")
