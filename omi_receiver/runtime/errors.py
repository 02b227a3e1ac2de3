"""One exception type per failure class; each maps to one HTTP status, once."""

from __future__ import annotations


class RequestError(Exception):
    """A request the client must change before retrying (4xx)."""

    status = 400

    def __init__(self, code: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.detail}


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401

    def __init__(self):
        # One answer whatever was wrong, so a caller learns nothing about which part failed.
        super().__init__("unauthorized", "missing or invalid token", {"WWW-Authenticate": "Bearer"})


class Forbidden(RequestError):
    """A valid request this deployment does not take (a uid outside ALLOWED_UIDS)."""

    status = 403


class MethodNotAllowed(RequestError):
    status = 405

    def __init__(self, method: str):
        super().__init__("method_not_allowed", f"{method} is not allowed; use POST", {"Allow": "POST"})


class RequestTimeout(RequestError):
    """The body took longer than BODY_READ_SECONDS; the sender retries 408."""

    status = 408


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class Unavailable(RequestError):
    """Transient: the chunk could not be stored; the sender should retry (it does on 5xx)."""

    status = 503

    def __init__(self, detail: str, retry_after: int):
        super().__init__("unavailable", detail, {"Retry-After": str(retry_after)})
