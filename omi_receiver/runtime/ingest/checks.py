"""The checks a POST must pass before its body is read (README, "What ingest accepts").

`accept` runs them in order, reads the body whole (body.py) and returns the chunk; the first
failure raises the RequestError or InvalidChunk that handler.py turns into the answer.
"""

from __future__ import annotations

import hmac
import uuid
from urllib.parse import parse_qsl

from .. import contract
from ..config import Config
from ..errors import BadRequest, Forbidden, MethodNotAllowed, PayloadTooLarge, Unauthorized, UnsupportedMediaType
from . import body

OCTET_STREAM = "application/octet-stream"


def accept(request, config: Config, deadline: body.Deadline, log_fields: dict) -> contract.Chunk:
    """Run the checks in order, read the body and build the chunk; raises on the first
    failure. Fills `log_fields` with what is known good (the uid) for the refusal log."""
    if request.method != "POST":
        raise MethodNotAllowed(request.method)
    if not _authorized(request, config.token_bytes):
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
