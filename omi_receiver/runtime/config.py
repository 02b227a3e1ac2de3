"""Settings for both functions, read once from environment variables.

Every setting is a field of `Config`; its environment variable name is the field
name upper-cased (see `ENV_VARS`). Terraform sets the same names (tests/infra checks
that both sides agree), and the local stack passes them through from `make up`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping

from .codec import Encoding
from .contract import UID_PATTERN

# Pub/Sub refuses publish requests over 10 MB; leave room for attributes.
PUBSUB_MESSAGE_LIMIT = 10_000_000


class ConfigError(ValueError):
    """A required setting is missing or a setting has an invalid value."""


@dataclasses.dataclass(frozen=True)
class Config:
    # --- shared ---
    google_cloud_project: str = ""
    chunks_topic: str = "audio-chunks"
    # Users are spread over this many chunk topics (each with one subscription and one
    # assembler pass per tick) by crc32(uid). 1: a single topic and subscription.
    assembler_shards: int = 1

    # --- ingest ---
    # Comma-separated; more than one during a rotation. Required by ingest.
    ingest_tokens: str = ""
    max_chunk_bytes: int = 9_900_000
    # The longest a request's body may take to arrive, from when ingest starts on it. A
    # slower upload answers 408 and publishes nothing, so a stalled client cannot hold an
    # instance's threads. A 10-second legacy chunk (320 kB) takes a fraction of a second
    # from a server, and even a 9.9 MB one needs only 8 Mbit/s.
    body_read_seconds: float = 10.0
    # Comma-separated uids this deployment accepts (403 for any other); empty: every
    # valid uid. A leaked URL then cannot let strangers fill the bucket.
    allowed_uids: str = ""
    # Bound on waiting for Pub/Sub before answering 503; well under the sender's 15 s.
    publish_timeout_seconds: float = 8.0
    retry_after_seconds: int = 2
    # A `chunk_accepted` log line per accepted chunk: off by default. At one chunk a second
    # per user it is 3,600 Cloud Logging entries per user-hour, billed per GiB, and Cloud Run's
    # request log and request_count metric already record every answer.
    log_accepted_chunks: bool = False
    # How ingest publishes a chunk: flac (lossless, ~40 % fewer Pub/Sub bytes on speech;
    # a chunk FLAC cannot shrink goes as PCM all the same) or pcm (the body as posted).
    # The assembler reads both either way (contract.py, codec.py).
    chunk_encoding: str = "flac"

    # --- assembler ---
    recordings_bucket: str = ""
    chunks_subscription: str = "audio-chunks-assembler"
    dead_letter_topic: str = "audio-chunks-dead-letter"
    recordings_topic: str = "recordings"
    # A pause in the audio longer than this starts a new recording, and a recording
    # idle this long is finalized. Must exceed the interval set in the Omi app.
    session_gap_seconds: int = 120
    max_recording_seconds: int = 3600
    # Chunks received less than this long before a pass starts wait for the next
    # pass, so chunks still in flight from other ingest instances sort into place.
    settle_seconds: float = 10.0
    # Chunk ids remembered per user (by received_at) to drop redeliveries and retries.
    dedup_window_seconds: int = 900
    # Time budget of one assembler pass; below the tick interval and the ack deadline.
    pass_seconds: float = 45.0
    # The chunk subscriptions' ack deadline: when a dead pass's chunks are back for sure.
    ack_deadline_seconds: int = 120
    # A pass holds a per-user lease this long; a crashed pass's lease expires. Longer than
    # the subscription's 120 s ack deadline, so a crashed batch is redelivered before any
    # newer chunk of that user can be committed ahead of it.
    lease_seconds: int = 150
    max_messages_per_pull: int = 1000
    # Audio bytes a pass collects before it flushes: its memory bound. It collects again only
    # if it held no chunk back for ordering, so in practice also what one pass assembles.
    max_pass_bytes: int = 268_435_456
    # Users flushed in parallel within one pass.
    flush_workers: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        environ = os.environ if environ is None else environ
        config = cls(**env_values(cls, environ))
        config._validate()
        return config

    def _validate(self) -> None:
        if not 0 < self.max_chunk_bytes <= PUBSUB_MESSAGE_LIMIT:
            raise ConfigError(f"MAX_CHUNK_BYTES must be between 1 and {PUBSUB_MESSAGE_LIMIT}")
        if self.max_chunk_bytes % 2:
            raise ConfigError("MAX_CHUNK_BYTES must be even (PCM16 samples)")
        if not 0 < self.body_read_seconds <= 60:
            raise ConfigError("BODY_READ_SECONDS must be in (0, 60]")
        bad = [uid for uid in _csv(self.allowed_uids) if not UID_PATTERN.fullmatch(uid)]
        if bad:
            raise ConfigError(
                f"ALLOWED_UIDS holds {len(bad)} value(s) that are not uids "
                f"(^[A-Za-z0-9_-]{{1,128}}$), e.g. {bad[0][:40]!r}"
            )
        if not 0 < self.publish_timeout_seconds < 15:
            raise ConfigError("PUBLISH_TIMEOUT_SECONDS must be in (0, 15): the sender gives up at 15 s")
        if self.session_gap_seconds <= 0 or self.max_recording_seconds <= 0:
            raise ConfigError("SESSION_GAP_SECONDS and MAX_RECORDING_SECONDS must be positive")
        if self.lease_seconds <= self.pass_seconds:
            raise ConfigError("LEASE_SECONDS must exceed PASS_SECONDS")
        if not self.pass_seconds < self.ack_deadline_seconds < self.lease_seconds:
            raise ConfigError("need PASS_SECONDS < ACK_DEADLINE_SECONDS < LEASE_SECONDS")
        if not 1 <= self.assembler_shards <= 64:
            raise ConfigError("ASSEMBLER_SHARDS must be between 1 and 64")
        if self.max_pass_bytes < 16 * 2**20:
            raise ConfigError("MAX_PASS_BYTES must be at least 16 MiB")
        if self.chunk_encoding not in {e.value for e in Encoding}:
            raise ConfigError(f"CHUNK_ENCODING={self.chunk_encoding[:40]!r} must be flac or pcm")

    def require(self, *names: str) -> None:
        """Fail at start-up, naming the variable, when a required setting is empty."""
        missing = [n.upper() for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(f"missing required environment variable(s): {', '.join(missing)}")

    # Read on every request: computed once per Config (a frozen dataclass still has a
    # __dict__ for cached_property to fill).
    @functools.cached_property
    def tokens(self) -> tuple[str, ...]:
        """INGEST_TOKENS, the one place it is parsed."""
        return _csv(self.ingest_tokens)

    @functools.cached_property
    def token_bytes(self) -> tuple[bytes, ...]:
        return tuple(token.encode() for token in self.tokens)

    @functools.cached_property
    def uid_allow_list(self) -> frozenset[str] | None:
        """The uids ingest accepts, or None for every valid uid."""
        return frozenset(_csv(self.allowed_uids)) or None

    @functools.cached_property
    def encoding(self) -> Encoding:
        """CHUNK_ENCODING as the codec's type."""
        return Encoding(self.chunk_encoding)

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.google_cloud_project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        return f"projects/{self.google_cloud_project}/subscriptions/{subscription}"

    def shard_topic(self, shard: int) -> str:
        """The chunk topic of one shard (infra/pubsub.tf names them the same way). A topic
        per shard, not filtered subscriptions: Pub/Sub bills filtered-out messages."""
        if self.assembler_shards == 1:
            return self.chunks_topic
        return f"{self.chunks_topic}-{shard}"

    @property
    def dead_letter_hold_subscription(self) -> str:
        """Where dead letters wait for `omi-receiver dlq` (infra/pubsub.tf names it the same)."""
        return f"{self.dead_letter_topic}-hold"

    def shard_subscription(self, shard: int) -> str:
        """The assembler's subscription on `shard_topic(shard)`."""
        if self.assembler_shards == 1:
            return self.chunks_subscription
        return f"{self.chunks_subscription}-{shard}"


def env_values(cls: type, environ: Mapping[str, str]) -> dict[str, object]:
    """The fields of dataclass `cls` that `environ` sets (each under its name upper-cased;
    empty counts as unset), parsed by the field's type (str, int, float, bool); a bad
    value is a ConfigError naming the variable. Also builds the local tools' settings."""
    values = {}
    for field in dataclasses.fields(cls):
        raw = environ.get(field.name.upper())
        if raw is None or raw == "":
            continue
        values[field.name] = _parse(field, raw)
    return values


def _csv(text: str) -> tuple[str, ...]:
    """A comma-separated setting's values, blanks dropped."""
    return tuple(value.strip() for value in text.split(",") if value.strip())


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(raw: str) -> bool:
    try:
        return _BOOLEANS[raw.strip().lower()]
    except KeyError:
        raise ValueError(raw) from None


_TYPES = {"str": str, "int": int, "float": float, "bool": _bool}


def _parse(field: dataclasses.Field, raw: str):
    kind = _TYPES[field.type]
    try:
        return kind(raw)
    except ValueError as exc:
        name = "boolean (true or false)" if kind is _bool else kind.__name__
        raise ConfigError(f"{field.name.upper()}={raw!r} is not a valid {name}") from exc


ENV_VARS: tuple[str, ...] = tuple(f.name.upper() for f in dataclasses.fields(Config))
DEFAULTS: dict[str, object] = {f.name.upper(): f.default for f in dataclasses.fields(Config)}
