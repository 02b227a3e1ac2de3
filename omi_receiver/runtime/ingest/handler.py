"""Ingest: one POST of PCM16 audio from the Omi backend becomes one Pub/Sub message.

    POST <base>/<token>?sample_rate=<8000..48000>&uid=<uid>
    Content-Type: application/octet-stream   (optional)
    Idempotency-Key: <uuid4>                 (optional; current senders reuse it on retries)
    Authorization: Bearer <token>            (optional, instead of the token in the path)
    body: raw PCM16 little-endian mono

Checks run in this order; the first failure answers `{"error", "detail"}` and nothing is
published (README, "What ingest accepts", has the same table; checks.py runs them):

  1. method != POST                     405 + Allow: POST. Before auth: the answer is the
     same whatever the token, so it reveals nothing, and a GET to the URL is always 405,
     right token or wrong.
  2. token missing or wrong             401, one identical answer; nothing else about the
     request is looked at before it, so a 401 leaks nothing.
  3. Content-Length > max_chunk_bytes   413, before any of the body is read.
  4. Content-Type not octet-stream      415 unsupported_media_type
     Content-Encoding not identity, or
     Transfer-Encoding not chunked      415 unsupported_encoding (compressed bytes are not PCM)
  5. query: a parameter given twice,    400
     uid, sample_rate (canonical
     decimal), Idempotency-Key
  6. uid outside ALLOWED_UIDS, if set   403
  7. body: read at most max + 1 bytes   413 if longer; 400 incomplete_body if fewer bytes
     within BODY_READ_SECONDS            than Content-Length arrived or the chunked body
                                        broke off; 408 if it took longer; 400 if empty or
                                        odd length (body.py).

Then the chunk is published (data = body, as FLAC when CHUNK_ENCODING=flac and that makes it
smaller: codec.py; no ordering key: see publisher.py) and the answer is 200 only once Pub/Sub
has it; otherwise 503 + Retry-After. Only a Pub/Sub failure gives a 5xx (the sender's retries
and circuit breaker make every 5xx cost the user audio).
Refusals are logged through rejections.py, which bounds the lines per instance.
"""

from __future__ import annotations

import json
import time

from flask import Response
from google.cloud.pubsub_v1.publisher import exceptions as pubsub_exceptions

from .. import clients, codec, contract, logs
from ..config import Config, ConfigError
from ..errors import BadRequest, PayloadTooLarge, RequestError, Unavailable
from ..lazy import Lazy
from . import body
from .checks import accept
from .publisher import publish_chunk
from .rejections import RejectionLog

_rejections = RejectionLog()  # per instance: bounds the log lines refusals can cause


def handle_http(request) -> Response:
    """Entry point for main.receive_chunk: wires this instance's config and publisher."""
    try:
        config = _config.get()
    except ConfigError as exc:
        # The message names the variable; it goes to the logs, not to an anonymous caller.
        logs.error("config_invalid", detail=str(exc))
        return _json(500, {"error": "misconfigured", "detail": "the function is misconfigured; see its logs"})
    try:
        publisher = clients.chunk_publisher()
    except Exception as exc:  # noqa: BLE001 - e.g. no credentials: nothing a caller can fix; it is logged
        logs.error("internal_error", error=type(exc).__name__, detail=str(exc)[:500])
        return _internal()
    return handle(request, config, publisher)


def set_config(config: Config | None) -> None:
    """Replace this instance's config (tests); None reads the environment again."""
    _config.set(config)


def _read_config() -> Config:
    config = Config.from_env()
    config.require("google_cloud_project", "ingest_tokens")
    if not config.tokens:
        raise ConfigError("INGEST_TOKENS holds no token (only commas or blanks)")
    return config


_config = Lazy(_read_config)


def handle(request, config: Config, publisher) -> Response:
    """Check one request, publish it, answer. Pure apart from the publisher and logs."""
    started = time.perf_counter()
    deadline = body.deadline_for(request, config.body_read_seconds)
    log_fields: dict[str, object] = {}  # filled in as values are validated
    if config.encoding is codec.Encoding.FLAC:
        codec.warm_up()  # the first request of an instance starts loading it, off this thread
    try:
        chunk = accept(request, config, deadline, log_fields)
        log_fields.update(chunk_id=chunk.chunk_id, bytes=len(chunk.data))
        published, encoding = _publish(publisher, config, chunk, started, log_fields)
    except (RequestError, contract.InvalidChunk) as exc:
        # The one place where failures become HTTP answers.
        err = exc if isinstance(exc, RequestError) else BadRequest(exc.code, exc.detail)
        body.discard_rest(request, deadline)
        if err.status < 500:  # publish_failed is already logged
            _rejections.rejected(err.code, err.status, **_only_uid(log_fields))
        return _json(err.status, err.body(), err.headers)
    except Exception as exc:  # noqa: BLE001 - a bug: answer without internals, log with them
        body.discard_rest(request, deadline)
        logs.error("internal_error", error=type(exc).__name__, detail=str(exc)[:500], **_only_uid(log_fields))
        return _internal()

    _rejections.tick()
    if config.log_accepted_chunks:  # off by default: a log entry per second per user (config.py)
        logs.info(
            "chunk_accepted",
            uid=chunk.uid,
            chunk_id=chunk.chunk_id,
            bytes=len(chunk.data),
            published_bytes=published,
            encoding=encoding.value,
            latency_ms=_ms_since(started),
            sample_rate=chunk.sample_rate,
        )
    return _json(200, {"chunk_id": chunk.chunk_id, "bytes": len(chunk.data), "duration_ms": chunk.duration_us / 1000})


def _publish(
    publisher, config: Config, chunk: contract.Chunk, started: float, log_fields: dict
) -> tuple[int, codec.Encoding]:
    """Publish to the user's shard topic; returns the size and encoding of what was
    published. Raises the RequestError the sender should hear."""
    try:
        shard = contract.shard_of(chunk.uid, config.assembler_shards)
        topic = config.topic_path(config.shard_topic(shard))
        return publish_chunk(publisher, topic, chunk, config.publish_timeout_seconds, shard, config.encoding)
    except pubsub_exceptions.MessageTooLargeError:
        # Only reachable when MAX_CHUNK_BYTES is set at Pub/Sub's limit; still the
        # request's size, so a 4xx: a retry could never succeed.
        raise PayloadTooLarge("too_large", "the chunk is too large for one Pub/Sub message") from None
    except Exception as exc:  # any publish failure is a 503 the sender retries
        logs.error(
            "publish_failed",
            error=type(exc).__name__,
            detail=str(exc)[:300],
            latency_ms=_ms_since(started),
            **log_fields,
        )
        raise Unavailable(
            "the chunk could not be stored; retry with the same Idempotency-Key", config.retry_after_seconds
        ) from exc


def _only_uid(log_fields: dict) -> dict:
    return {"uid": log_fields["uid"]} if "uid" in log_fields else {}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, headers=headers, mimetype="application/json"
    )


def _internal() -> Response:
    return _json(500, {"error": "internal", "detail": "unexpected error; the chunk was not stored"})
