"""Cut uploads: a POST that announces the whole Content-Length, sends only part of the body
and closes the connection, as a dropped connection or a stalled slow upload does.

The sender sees a network error and retries the whole chunk under the same
Idempotency-Key. A receiver that kept the partial body would store it in place of the
chunk it acknowledges later (issue 12); the soak cuts a share of its uploads to show none is.
"""

from __future__ import annotations

import dataclasses
import random
import socket
import ssl
import time
from urllib.parse import urlsplit

import requests

from omi_receiver.devtools.simulate.options import DEFAULT_TIMEOUT

CUT_LINGER_MAX = 1.0  # seconds a "slow" cut upload waits, sending nothing, before it closes


@dataclasses.dataclass(frozen=True)
class Cut:
    """How a cut upload ends: after `sent` bytes of the body the connection is closed, at
    once (`linger` 0) or after `linger` seconds of sending nothing (a slow upload that stops)."""

    sent: int
    linger: float = 0.0


def plan_cut(rng: random.Random, size: int) -> Cut:
    """A cut strictly inside a body of `size` bytes: no body at all one time in ten, else
    anywhere (so about half odd); a third of the cuts wait up to CUT_LINGER_MAX s first."""
    sent = 0 if size < 2 or rng.random() < 0.1 else rng.randrange(1, size)
    linger = rng.uniform(0.1, CUT_LINGER_MAX) if rng.random() < 1 / 3 else 0.0
    return Cut(sent, linger)


def headers(key: str | None) -> dict[str, str]:
    """The headers of every POST of the sender; `key` is the Idempotency-Key, if any."""
    out = {"Content-Type": "application/octet-stream"}
    if key is not None:
        out["Idempotency-Key"] = key
    return out


def send_cut(
    session: requests.Session, url: str, body: bytes, key: str | None, cut: Cut, timeout: float = DEFAULT_TIMEOUT[0]
) -> None:
    """Start the POST the sender would make, but send only `cut.sent` bytes of `body`, then
    close the connection (after `cut.linger` s). No answer is read: there is none to read.

    requests will not send fewer bytes than it declares, hence the raw socket; the request
    line and headers are the ones `session` would send.
    """
    request = session.prepare_request(requests.Request("POST", url, data=body, headers=headers(key)))
    parts = urlsplit(request.url)
    head = [f"POST {request.path_url} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}"]
    head += [f"{name}: {value}" for name, value in request.headers.items()]
    sock = socket.create_connection(
        (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)), timeout=timeout
    )
    try:
        if parts.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body[: cut.sent])
        time.sleep(cut.linger)
    finally:
        sock.close()
