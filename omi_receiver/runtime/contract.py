"""The message contract between ingest and the assembler.

One Pub/Sub message per accepted POST, no ordering key (the assembler orders by
received_at), and these attributes are always set. Its data is the request body (PCM16 LE
mono) in the encoding the `encoding` attribute names (codec.py): `flac`, or `pcm` (the body
exactly). Messages without it, from older ingest, are PCM. `Chunk.message` builds a message,
`Chunk.from_message` reads one back to the PCM ingest acknowledged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import zlib

from . import codec
from .codec import Encoding

ATTR_UID = "uid"
ATTR_SAMPLE_RATE = "sample_rate"
ATTR_RECEIVED_AT = "received_at"
ATTR_CHUNK_ID = "chunk_id"
# Which assembler shard (subscription) the chunk belongs to; see shard_of.
ATTR_SHARD = "shard"
# How the data is encoded (codec.Encoding); absent: PCM. Not required: older ingest never set it.
ATTR_ENCODING = "encoding"
REQUIRED_ATTRIBUTES = (ATTR_UID, ATTR_SAMPLE_RATE, ATTR_RECEIVED_AT, ATTR_CHUNK_ID)

# Matched with fullmatch: `$` alone would also let a trailing newline through.
UID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 48000
# Idempotency-Key values are uuid4 in practice; accept any short printable token.
CHUNK_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,128}$")
BYTES_PER_SAMPLE = 2


class InvalidChunk(ValueError):
    """A value breaks the contract; `code` is the machine-readable reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code = code
        self.detail = detail


def check_uid(uid: str | None) -> str:
    if not uid:
        raise InvalidChunk("missing_uid", "query parameter 'uid' is required")
    if not UID_PATTERN.fullmatch(uid):
        raise InvalidChunk("invalid_uid", "uid must match ^[A-Za-z0-9_-]{1,128}$")
    return uid


def check_sample_rate(raw: str | None) -> int:
    if raw is None or raw == "":
        raise InvalidChunk("missing_sample_rate", "query parameter 'sample_rate' is required")
    # Canonical decimal only, as the senders write it: "016000" or "+16000" could be read
    # more than one way by whoever parses it next.
    if not re.fullmatch(r"[1-9][0-9]{0,5}", raw):
        raise InvalidChunk(
            "invalid_sample_rate", "sample_rate must be a whole number in plain decimal (no sign, no leading zero)"
        )
    rate = int(raw)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise InvalidChunk(
            "invalid_sample_rate",
            f"sample_rate must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE}",
        )
    return rate


def check_pcm(data: bytes) -> None:
    if not data:
        raise InvalidChunk("empty_body", "the body must hold PCM16 audio; it was empty")
    if len(data) % BYTES_PER_SAMPLE:
        raise InvalidChunk("odd_length", f"PCM16 needs an even number of bytes; got {len(data)}")


def check_chunk_id(chunk_id: str) -> str:
    if not CHUNK_ID_PATTERN.fullmatch(chunk_id):
        raise InvalidChunk("invalid_chunk_id", "Idempotency-Key must be 1-128 printable ASCII characters")
    return chunk_id


def shard_of(uid: str, shards: int) -> int:
    """Stable across processes and releases (unlike hash()): crc32 of the uid."""
    return zlib.crc32(uid.encode()) % shards


def duration_us(n_bytes: int, sample_rate: int) -> int:
    """Duration of `n_bytes` of PCM16 mono audio, in microseconds."""
    return n_bytes * 1_000_000 // (BYTES_PER_SAMPLE * sample_rate)


# --- time: received_at travels as RFC 3339 UTC with microseconds ---------------------


def format_time(micros: int) -> str:
    # time.strftime on a gmtime tuple: a third of datetime's cost, on every request.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(micros // 1_000_000)) + f".{micros % 1_000_000:06d}Z"


def parse_time(text: str) -> int:
    """RFC 3339 UTC ('...Z' or '+00:00') to microseconds since the epoch."""
    if not isinstance(text, str) or not text:
        raise InvalidChunk("invalid_received_at", "received_at must be an RFC 3339 time")
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidChunk("invalid_received_at", f"received_at {text!r} is not RFC 3339") from exc
    if moment.tzinfo is None:
        raise InvalidChunk("invalid_received_at", "received_at needs a UTC offset")
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def now_us() -> int:
    return time.time_ns() // 1000


@dataclasses.dataclass(frozen=True)
class Chunk:
    """One accepted POST, as the assembler sees it."""

    uid: str
    sample_rate: int
    received_at_us: int
    chunk_id: str
    data: bytes

    @property
    def duration_us(self) -> int:
        return duration_us(len(self.data), self.sample_rate)

    def attributes(self) -> dict[str, str]:
        return {
            ATTR_UID: self.uid,
            ATTR_SAMPLE_RATE: str(self.sample_rate),
            ATTR_RECEIVED_AT: format_time(self.received_at_us),
            ATTR_CHUNK_ID: self.chunk_id,
        }

    def message(
        self, encoding: Encoding, shard: int | None = None, *, wait: bool = False
    ) -> tuple[bytes, dict[str, str]]:
        """The Pub/Sub message (data, attributes) for this chunk, as ingest publishes it.

        With Encoding.FLAC the data is FLAC when that pays and the codec is ready (`wait`:
        load it now), else the PCM; the `encoding` attribute says which (codec.encode)."""
        data, used = (self.data, Encoding.PCM)
        if encoding is Encoding.FLAC:
            data, used = codec.encode(self.data, self.sample_rate, wait=wait)
        attributes = self.attributes()
        attributes[ATTR_ENCODING] = used.value
        if shard is not None:
            attributes[ATTR_SHARD] = str(shard)
        return data, attributes

    @classmethod
    def from_message(cls, data: bytes, attributes: dict[str, str]) -> Chunk:
        """Decode and check a Pub/Sub message; raises InvalidChunk for poison (an unknown
        encoding, or a payload that does not decode, included)."""
        missing = [a for a in REQUIRED_ATTRIBUTES if not attributes.get(a)]
        if missing:
            raise InvalidChunk("missing_attributes", f"missing attribute(s): {', '.join(missing)}")
        uid = check_uid(attributes[ATTR_UID])
        rate = check_sample_rate(attributes[ATTR_SAMPLE_RATE])
        received = parse_time(attributes[ATTR_RECEIVED_AT])
        chunk_id = check_chunk_id(attributes[ATTR_CHUNK_ID])
        try:
            pcm = codec.decode(data, codec.parse_encoding(attributes.get(ATTR_ENCODING)), rate)
        except codec.CodecError as exc:
            raise InvalidChunk(exc.code, exc.detail) from None
        check_pcm(pcm)
        return cls(uid, rate, received, chunk_id, pcm)
