"""A request body read whole, within a deadline, or not at all.

A chunk may be published only when its whole body arrived. Under gunicorn (how
functions-framework serves a function, here and on Cloud Run) an upload cut short is not
an error on its own: gunicorn sets `wsgi.input_terminated`, so werkzeug hands the function
gunicorn's stream unchecked, and a connection closed part-way through a Content-Length body
just ends the stream early. So the bytes read are counted against Content-Length here. A
chunked body cut short, or framed wrongly, makes gunicorn's reader raise: that counts as
incomplete too.

A slow upload would hold a request thread for as long as the client likes (the server sets
no timeout), so every read of a body runs under a deadline. A socket timeout cannot bound
it: gunicorn reads a body in many recv() calls and each would get the whole timeout again.
Instead one watchdog thread per process shuts down the reading side of a connection whose
deadline passed: the blocked read returns at once, and the request answers 408. The
connection is useless afterwards, which is what a client that stalled mid-body deserves.
"""

from __future__ import annotations

import socket
import threading
import time

from werkzeug.exceptions import ClientDisconnected

from ..errors import BadRequest, PayloadTooLarge, RequestTimeout

_BLOCK = 64 * 1024
# How often the watchdog looks for overrun reads: a deadline is kept to within this.
WATCH_INTERVAL_SECONDS = 0.5


class Deadline:
    """The time a request's body may take, from when the function started on it."""

    def __init__(self, seconds: float, sock: socket.socket | None):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self._sock = sock
        self.cut = False  # set by the watchdog when it shut the connection's reading side

    def passed(self) -> bool:
        return self.cut or time.monotonic() >= self.at

    def __enter__(self) -> Deadline:
        if self._sock is not None:
            _watchdog.watch(self)
        return self

    def __exit__(self, *exc) -> None:
        if self._sock is None:
            return
        _watchdog.unwatch(self)
        if self.passed():
            # Overran between two looks of the watchdog: cut off here, or the framework,
            # which reads what is left of a body after the answer, would wait for it.
            self.cut_off()

    def cut_off(self) -> None:
        """End any read on this connection now (the watchdog, or the request itself)."""
        self.cut = True
        try:
            self._sock.shutdown(socket.SHUT_RD)  # a blocked recv() returns b"" at once
        except OSError:
            pass  # already closed by the client


def deadline_for(request, seconds: float) -> Deadline:
    """A Deadline watched through the request's socket when the server exposes it
    (gunicorn: `gunicorn.socket`); otherwise checked after each read only."""
    return Deadline(seconds, request.environ.get("gunicorn.socket"))


def read_whole(request, limit: int, deadline: Deadline) -> bytes:
    """The body, holding at most limit + 1 bytes: enough to tell it is too large.

    Raises PayloadTooLarge past `limit`, BadRequest("incomplete_body") when fewer bytes than
    Content-Length arrived or the chunked framing broke off, RequestTimeout when the body
    took longer than the deadline. Content-Length has been checked against the limit
    already, but chunked bodies have none and a wrong header must not let more through, so
    the bytes actually read are counted too.
    """
    declared = request.content_length  # None when absent or chunked
    stream = request.stream
    block = max(declared or 0, _BLOCK)  # one read when the length is known
    parts, size = [], 0
    with deadline:
        try:
            while size <= limit:
                part = stream.read(min(block, limit + 1 - size))
                if not part:
                    break
                parts.append(part)
                size += len(part)
        except ClientDisconnected:  # werkzeug's own length check (no gunicorn in front)
            _incomplete(deadline, "the connection closed before Content-Length bytes arrived")
        except Exception as exc:  # noqa: BLE001 - any failure to read the body means it is not whole
            _incomplete(deadline, f"the body could not be read whole ({type(exc).__name__})")
    if deadline.passed():
        _timed_out(deadline)
    if size > limit:
        raise PayloadTooLarge("too_large", f"the body is over the limit of {limit} bytes")
    if declared is not None and size != declared:
        raise BadRequest(
            "incomplete_body",
            f"the body ended after {size} of the {declared} bytes Content-Length announced; nothing was stored",
        )
    return b"".join(parts)  # a single part is returned as is, without a copy


def discard_rest(request, deadline: Deadline) -> None:
    """Read and drop what is left of a rejected request's body, block by block, within
    the deadline.

    functions-framework reads any unread body after the response (get_data(), which keeps it
    all in memory) so the connection stays usable; draining it here first keeps memory flat
    for oversized or unauthorized bodies.
    """
    with deadline:
        try:
            stream = request.stream
            while not deadline.passed() and stream.read(_BLOCK):
                pass
        except Exception:  # noqa: BLE001 - a client gone away: nothing left to protect
            pass


def _incomplete(deadline: Deadline, detail: str):
    if deadline.passed():
        _timed_out(deadline)
    raise BadRequest("incomplete_body", f"{detail}; nothing was stored") from None


def _timed_out(deadline: Deadline):
    raise RequestTimeout(
        "body_timeout",
        f"the body did not arrive within {deadline.seconds:g} s; "
        "nothing was stored (retry with the same Idempotency-Key)",
    ) from None


class _Watchdog:
    """One daemon thread per process: cuts off the reads that overran their deadline.

    Watching and unwatching a request is one dict operation, atomic under the GIL, so a
    request takes no lock; the thread looks every WATCH_INTERVAL_SECONDS, so a request whose
    body arrives at once costs no wake-up.
    """

    def __init__(self):
        self._watched: dict[int, Deadline] = {}
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: Deadline) -> None:
        self._watched[id(deadline)] = deadline
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="body-deadlines", daemon=True)
                    self._thread.start()

    def unwatch(self, deadline: Deadline) -> None:
        self._watched.pop(id(deadline), None)

    def _run(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL_SECONDS)
            now = time.monotonic()
            for deadline in list(self._watched.values()):
                if now >= deadline.at:
                    self.unwatch(deadline)
                    deadline.cut_off()


_watchdog = _Watchdog()
