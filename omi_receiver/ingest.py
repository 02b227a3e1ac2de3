"""Ingest: one POST of PCM16 audio from the Omi backend becomes one Pub/Sub message.

    POST <base>/<token>?sample_rate=<8000..48000>&uid=<uid>
    Content-Type: application/octet-stream   (optional)
    Idempotency-Key: <uuid4>                 (optional; current senders reuse it on retries)
    Authorization: Bearer <token>            (optional, instead of the token in the path)
    body: raw PCM16 little-endian mono

Checks run in this order; the first failure answers `{"error", "detail"}` and nothing is
published (README, "What ingest accepts", has the same table):

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

Then the chunk is published (data = body, no ordering key: see publisher.py) and the
answer is 200 only once Pub/Sub has it; otherwise 503 + Retry-After. Only a Pub/Sub failure gives a 5xx
(the sender's retries and circuit breaker make every 5xx cost the user audio).
Refusals are logged through rejections.py, which bounds the lines per instance.
"""

from __future__ import annotations

import functools
import hmac
import json
import time
import uuid
from urllib.parse import parse_qsl

from flask import Response
from google.api_core import exceptions as api_exceptions
from google.cloud.pubsub_v1.publisher import exceptions as pubsub_exceptions

from . import body, clients, contract, logs
from .config import Config, ConfigError
from .errors import (
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from .rejections import RejectionLog

OCTET_STREAM = "application/octet-stream"

# What a publish attempt may fail with and still succeed when tried again: the codes the
# client library retries by default.
_RETRYABLE = (
    api_exceptions.Aborted,
    api_exceptions.Cancelled,
    api_exceptions.DeadlineExceeded,
    api_exceptions.InternalServerError,
    api_exceptions.ResourceExhausted,
    api_exceptions.ServiceUnavailable,
    api_exceptions.Unknown,
)

_config: Config | None = None
_rejections = RejectionLog()  # per instance: bounds the log lines refusals can cause


def handle_http(request) -> Response:
    """Entry point for main.receive_chunk: wires this instance's config and publisher."""
    try:
        config = _get_config()
    except ConfigError as exc:
        # The message names the variable; it goes to the logs, not to an anonymous caller.
        logs.error("config_invalid", detail=str(exc))
        return _json(500, {"error": "misconfigured", "detail": "the function is misconfigured; see its logs"})
    try:
        publisher = clients.chunk_publisher()
    except Exception as exc:  # e.g. no credentials: nothing a caller can fix
        logs.error("internal_error", error=type(exc).__name__, detail=str(exc)[:500])
        return _internal()
    return handle(request, config, publisher)


def set_config(config: Config | None) -> None:
    """Replace this instance's config (tests); None reads the environment again."""
    global _config
    _config = config


def _get_config() -> Config:
    global _config
    if _config is None:
        # Two threads may both build it on the first requests; they build the same thing.
        config = Config.from_env()
        config.require("google_cloud_project", "ingest_tokens")
        if not config.tokens:
            raise ConfigError("INGEST_TOKENS holds no token (only commas or blanks)")
        _config = config
    return _config


def handle(request, config: Config, publisher) -> Response:
    """Check one request, publish it, answer. Pure apart from the publisher and logs."""
    started = time.perf_counter()
    deadline = body.deadline_for(request, config.body_read_seconds)
    log_fields: dict[str, object] = {}  # filled in as values are validated
    try:
        chunk = _accept(request, config, deadline, log_fields)
        log_fields.update(chunk_id=chunk.chunk_id, bytes=len(chunk.data))
        try:
            shard = contract.shard_of(chunk.uid, config.assembler_shards)
            _publish(publisher, config.topic_path(config.shard_topic(shard)), chunk,
                     config.publish_timeout_seconds, shard)
        except pubsub_exceptions.MessageTooLargeError:
            # Only reachable when MAX_CHUNK_BYTES is set at Pub/Sub's limit; still the
            # request's size, so a 4xx: a retry could never succeed.
            raise PayloadTooLarge("too_large", "the chunk is too large for one Pub/Sub message") from None
        except Exception as exc:
            logs.error("publish_failed", error=type(exc).__name__, detail=str(exc)[:300],
                       latency_ms=_ms_since(started), **log_fields)
            raise Unavailable(
                "the chunk could not be stored; retry with the same Idempotency-Key",
                config.retry_after_seconds,
            ) from exc
    except (RequestError, contract.InvalidChunk) as exc:
        # The one place where failures become HTTP answers.
        err = exc if isinstance(exc, RequestError) else BadRequest(exc.code, exc.detail)
        body.discard_rest(request, deadline)
        if err.status < 500:  # publish_failed is already logged
            _rejections.rejected(err.code, err.status, **_only_uid(log_fields))
        return _json(err.status, err.body(), err.headers)
    except Exception as exc:  # a bug: answer without internals, log with them
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
            latency_ms=_ms_since(started),
            sample_rate=chunk.sample_rate,
        )
    return _json(200, {
        "chunk_id": chunk.chunk_id,
        "bytes": len(chunk.data),
        "duration_ms": chunk.duration_us / 1000,
    })


def _accept(request, config: Config, deadline: body.Deadline, log_fields: dict) -> contract.Chunk:
    """Run checks 1-7 (module docstring) and build the chunk; raises on the first failure."""
    if request.method != "POST":
        raise MethodNotAllowed(request.method)
    if not _authorized(request, _token_bytes(config.ingest_tokens)):
        raise Unauthorized()

    limit = config.max_chunk_bytes
    declared = request.content_length  # None when absent or chunked
    if declared is not None and declared > limit:
        raise PayloadTooLarge("too_large", f"the body is {declared} bytes; the limit is {limit}")
    # An empty or parameter-only Content-Type counts as absent; parameters are ignored.
    if request.mimetype and request.mimetype != OCTET_STREAM:
        raise UnsupportedMediaType(
            "unsupported_media_type", f"Content-Type must be {OCTET_STREAM}, not {request.mimetype[:100]!r}"
        )
    _check_encodings(request.headers)

    uid_raw, rate_raw = _query(request)
    uid = contract.check_uid(uid_raw)
    log_fields["uid"] = uid
    sample_rate = contract.check_sample_rate(rate_raw)
    key = request.headers.get("Idempotency-Key")
    chunk_id = str(uuid.uuid4()) if key is None else contract.check_chunk_id(key)
    allowed = config.uid_allow_list
    if allowed is not None and uid not in allowed:
        raise Forbidden("uid_not_allowed", "this receiver does not accept audio for this uid (ALLOWED_UIDS)")

    data = body.read_whole(request, limit, deadline)
    contract.check_pcm(data)
    return contract.Chunk(uid, sample_rate, contract.now_us(), chunk_id, data)


def _check_encodings(headers) -> None:
    """The body must be the PCM itself. Gunicorn undoes chunked framing only; any other
    coding (gzip, br, ...) would reach the function still encoded and be stored as audio."""
    for header, allowed in (("Content-Encoding", {"identity"}), ("Transfer-Encoding", {"chunked", "identity"})):
        codings = {c.strip().lower() for c in headers.get(header, "").split(",")} - {""}
        if codings - allowed:
            raise UnsupportedMediaType(
                "unsupported_encoding",
                f"{header} {', '.join(sorted(codings - allowed))[:100]!r} is not accepted: send the raw PCM bytes",
            )


def _authorized(request, tokens: tuple[bytes, ...]) -> bool:
    """True when the last path segment or a Bearer token equals a configured token.

    Either place counts: when the function is behind IAM, Authorization carries Google's
    identity token, and the path token must still work. A trailing slash is ignored.
    Every candidate is compared with every token (hmac.compare_digest, no early exit), so
    timing tells neither which token matched nor how much of one did; with two tokens
    during a rotation both work.
    """
    candidates = [request.path.rstrip("/").rpartition("/")[2]]
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        candidates.append(value.strip())
    ok = False
    for candidate in candidates:
        # surrogatepass: a path that is not valid UTF-8 still encodes, and never matches.
        raw = candidate.encode("utf-8", "surrogatepass")
        for token in tokens:
            ok |= hmac.compare_digest(raw, token)
    return ok


@functools.lru_cache(maxsize=4)
def _token_bytes(ingest_tokens: str) -> tuple[bytes, ...]:
    return tuple(t.strip().encode() for t in ingest_tokens.split(",") if t.strip())


def _query(request) -> tuple[str | None, str | None]:
    """`uid` and `sample_rate` from the query string; a parameter given twice is refused.

    Legacy senders append "?sample_rate=...&uid=..." to the configured URL by string
    concatenation, so a URL that already had a query arrives as
    "?x=1?sample_rate=16000&uid=u1", which parses as x="1?sample_rate=16000", uid="u1".
    So a query holding a "?" is parsed again with every "?" read as "&", and that reading
    fills in what the normal parse lacks (the normal parse's values win). Well-formed
    queries (the current sender merges properly) hold no "?". In either parse a name given
    twice is ambiguous (which uid is meant?): 400, nothing published.
    """
    # Parsed here rather than by request.args, which raises on a query that is not UTF-8.
    raw = request.query_string.decode("utf-8", "replace")
    params = _unique_values(raw)
    if "?" in raw:  # a legacy URL, or a value holding "?": both readings must be unambiguous
        params = {**_unique_values(raw.replace("?", "&")), **params}
    return params.get("uid"), params.get("sample_rate")


def _unique_values(query: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in values:
            raise BadRequest("duplicate_parameter", f"query parameter {name[:40]!r} is given more than once")
        values[name] = value
    return values


def _publish(publisher, topic: str, chunk: contract.Chunk, timeout: float, shard: int) -> None:
    """Publish and wait until Pub/Sub has the message, within `timeout` seconds in all.

    Each attempt gets the time left; transient errors are retried here until the time is
    spent. A timed-out attempt may still land later; the sender retries with the same
    Idempotency-Key and the assembler drops duplicates by chunk_id. (publisher.py: Publish
    RPCs from the request threads, no client-side ordering queue that could block a user.)
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    attributes = chunk.attributes()
    attributes[contract.ATTR_SHARD] = str(shard)
    while True:
        remaining = deadline - time.monotonic()
        try:
            publisher.publish(topic, chunk.data, attributes=attributes, timeout=remaining)
            return
        except _RETRYABLE:
            if deadline - time.monotonic() <= delay:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


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
