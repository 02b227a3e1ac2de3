"""The HTTP edges of ingest, over real sockets: main.py served by functions-framework
(gunicorn, as on Cloud Run) in front of the Pub/Sub emulator.

An upload cut short must never be stored: the Omi backend retries it with the same
Idempotency-Key, and the assembler keeps the first copy of a key, so a stored fragment
would replace the chunk for good.
"""

from __future__ import annotations

import gzip
import json
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from assembly import audio_of, drain, recordings
from test_ingest_pubsub import OCTET, SECOND_16K, TOKEN, pull

from omi_receiver.runtime.assembler import Assembler

BODY = SECOND_16K[:6400]  # 200 ms at 16 kHz


def raw_request(base: str, body_head: bytes, *, headers: dict[str, str], query: str) -> socket.socket:
    """Open a connection and send a POST's request line, headers and the first part of its
    body; the caller decides what happens to the rest."""
    host, port = urlsplit(base).hostname, urlsplit(base).port
    sock = socket.create_connection((host, port), timeout=10)
    head = f"POST /{TOKEN}?{query} HTTP/1.1\r\nHost: {host}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    sock.sendall(head.encode() + body_head)
    return sock


def answer_of(sock: socket.socket) -> tuple[int, dict]:
    """Read one response (the server closes or keeps the connection; either is fine)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        block = sock.recv(65536)
        if not block:
            break
        data += block
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest[: _length(data)])


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def post(base: str, uid: str, key: str, body: bytes = BODY) -> requests.Response:
    return requests.post(
        f"{base}/{TOKEN}",
        params={"sample_rate": 16000, "uid": uid},
        data=body,
        headers={"Content-Type": OCTET, "Idempotency-Key": key},
        timeout=15,
    )


def assembled(config, uid: str) -> tuple[bytes, dict]:
    """Run assembler passes until the subscription is drained; the user's one recording."""
    drain(Assembler(config))
    [(_, blob, metadata)] = recordings(config, uid)
    return audio_of(blob, 16000), metadata


def cut_abruptly(sock: socket.socket) -> None:
    sock.close()


def cut_after_a_stall(sock: socket.socket) -> None:
    time.sleep(0.5)  # a slow upload that stops part-way, then gives up
    sock.close()


@pytest.mark.parametrize("sent", [0, 3200, 6399])
@pytest.mark.parametrize("cut", [cut_abruptly, cut_after_a_stall])
def test_a_cut_upload_stores_nothing_and_its_retry_is_assembled_whole(stack_config, serve_ingest, sent, cut):
    """The defect of issue 12: Content-Length 6400, `sent` bytes, the connection closed.
    Then the Omi backend's retry: the whole body, the same Idempotency-Key."""
    base, _ = serve_ingest()
    uid, key = f"cut{sent}", str(uuid.uuid4())
    sock = raw_request(
        base,
        BODY[:sent],
        query=f"sample_rate=16000&uid={uid}",
        headers={"Content-Type": OCTET, "Content-Length": "6400", "Idempotency-Key": key},
    )
    cut(sock)
    time.sleep(0.3)  # let the server finish with the cut request before the retry
    retry = post(base, uid, key)
    assert (retry.status_code, retry.json()["bytes"]) == (200, 6400)
    audio, metadata = assembled(stack_config, uid)
    assert audio == BODY, f"the recording holds {len(audio)} of the 6400 acknowledged bytes"
    assert metadata["chunks"] == "1"


@pytest.mark.slow
def test_a_client_that_half_closes_hears_incomplete_body(stack_config, serve_ingest):
    base, _ = serve_ingest()
    sock = raw_request(
        base,
        BODY[:3200],
        query="sample_rate=16000&uid=half",
        headers={"Content-Type": OCTET, "Content-Length": "6400", "Idempotency-Key": "half-1"},
    )
    sock.shutdown(socket.SHUT_WR)
    status, answer = answer_of(sock)
    sock.close()
    assert (status, answer["error"]) == (400, "incomplete_body")
    assert "after 3200 of the 6400 bytes" in answer["detail"]
    assert pull(stack_config, 1, within=3.0) == []


@pytest.mark.slow
def test_a_stalled_upload_is_408_within_body_read_seconds_and_stores_nothing(stack_config, serve_ingest):
    base, _ = serve_ingest(BODY_READ_SECONDS="1")
    sock = raw_request(
        base,
        BODY[:400],
        query="sample_rate=16000&uid=stall",
        headers={"Content-Type": OCTET, "Content-Length": "6400", "Idempotency-Key": "stall-1"},
    )
    started = time.monotonic()
    status, answer = answer_of(sock)  # the client sends nothing more and waits
    waited = time.monotonic() - started
    assert (status, answer["error"]) == (408, "body_timeout")
    assert 0.9 < waited < 2.5, waited
    sock.settimeout(5)
    assert sock.recv(1) == b"", "the server must drop a connection whose body it gave up on"
    sock.close()
    assert pull(stack_config, 1, within=3.0) == []
    # The instance is not held: the retry goes through at once.
    assert post(base, "stall", "stall-1").status_code == 200


@pytest.mark.slow
def test_a_trickling_upload_cannot_stretch_the_deadline(stack_config, serve_ingest):
    """A byte every 0.3 s keeps every single socket read short; the deadline still holds."""
    base, _ = serve_ingest(BODY_READ_SECONDS="1")
    sock = raw_request(
        base, b"", query="sample_rate=16000&uid=trickle", headers={"Content-Type": OCTET, "Content-Length": "6400"}
    )
    started = time.monotonic()
    sock.settimeout(0.3)
    status = None
    for i in range(20):
        try:
            sock.sendall(BODY[i : i + 1])
            if sock.recv(1, socket.MSG_PEEK):
                break
        except TimeoutError:
            continue
        except OSError:
            break
    sock.settimeout(5)
    status, answer = answer_of(sock)
    sock.close()
    assert (status, answer["error"]) == (408, "body_timeout")
    assert time.monotonic() - started < 2.5
    assert pull(stack_config, 1, within=3.0) == []


def chunked(body: bytes, pieces: int = 4) -> bytes:
    step = -(-len(body) // pieces)
    out = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + step]), body[i : i + step]) for i in range(0, len(body), step))
    return out + b"0\r\n\r\n"


def test_chunked_uploads_whole_or_not_at_all(stack_config, serve_ingest):
    base, _ = serve_ingest()
    headers = {"Content-Type": OCTET, "Transfer-Encoding": "chunked"}
    # Cut inside the second chunk: the client half-closes and waits for the answer.
    sock = raw_request(
        base,
        chunked(BODY)[:2500],
        query="sample_rate=16000&uid=chunky",
        headers={**headers, "Idempotency-Key": "chunky-1"},
    )
    sock.shutdown(socket.SHUT_WR)
    status, answer = answer_of(sock)
    sock.close()
    assert (status, answer["error"]) == (400, "incomplete_body")
    # Whole: accepted, stored byte for byte.
    sock = raw_request(
        base, chunked(BODY), query="sample_rate=16000&uid=chunky", headers={**headers, "Idempotency-Key": "chunky-1"}
    )
    status, answer = answer_of(sock)
    sock.close()
    assert (status, answer["bytes"]) == (200, 6400)
    audio, _ = assembled(stack_config, "chunky")
    assert audio == BODY


@pytest.mark.slow
@pytest.mark.parametrize("header", ["Content-Encoding", "Transfer-Encoding"])
def test_compressed_bodies_are_415_and_store_nothing(stack_config, serve_ingest, header):
    base, _ = serve_ingest()
    packed = gzip.compress(BODY)
    if header == "Content-Encoding":
        answer = requests.post(
            f"{base}/{TOKEN}?sample_rate=16000&uid=zip",
            data=packed,
            headers={"Content-Type": OCTET, "Content-Encoding": "gzip"},
            timeout=15,
        )
        status, body = answer.status_code, answer.json()
    else:  # gunicorn undoes the chunked framing and passes the gzip bytes on
        sock = raw_request(
            base,
            chunked(packed),
            query="sample_rate=16000&uid=zip",
            headers={"Content-Type": OCTET, "Transfer-Encoding": "gzip, chunked"},
        )
        status, body = answer_of(sock)
        sock.close()
    assert (status, body["error"]) == (415, "unsupported_encoding")
    assert pull(stack_config, 1, within=3.0) == []


def test_a_flood_of_refusals_writes_one_log_line_per_reason(stack_config, serve_ingest):
    base, log = serve_ingest()
    with requests.Session() as http:
        for _ in range(150):
            assert http.post(f"{base}/nope?sample_rate=16000&uid=u1", data=BODY, timeout=15).status_code == 401
        for _ in range(50):
            assert http.get(f"{base}/{TOKEN}", timeout=15).status_code == 405
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith('{"severity"')]
    rejected = [(e["error"], e["count"]) for e in entries if e["event"] == "chunk_rejected"]
    assert rejected == [("unauthorized", 1), ("method_not_allowed", 1)]
