"""The Omi device simulator, checked on the wire against a fake receiver on 127.0.0.1.

A fake receiver is the right tool here (not a stand-in for an emulator): the thing under
test is the *sender*, i.e. what the simulator puts on the wire (chunk sizes, query,
headers, retries, pacing, never two requests in flight), so the far end only has to record
what arrives and answer, fail, stall or hang up exactly when a test tells it to. The real
receiver is tested elsewhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
import wave
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from omi_receiver.devtools import simulate
from omi_receiver.devtools.emulators import free_port
from omi_receiver.devtools.simulate import cli as simulate_cli
from omi_receiver.runtime import contract

TINY = (0.02, 0.04, 0.06)  # retry delays for tests
REPO = Path(__file__).resolve().parents[2]


# --- the fake receiver ----------------------------------------------------------------


@dataclasses.dataclass
class Reply:
    status: int = 200
    body: bytes | None = None  # None: {"chunk_id": <Idempotency-Key or "srv-<index>">}
    delay: float = 0.0  # seconds to wait before answering
    drop: bool = False  # close the connection without any answer


@dataclasses.dataclass
class Received:
    index: int
    target: str  # raw request-target, e.g. "/ingest?a=1?sample_rate=8000&uid=u1"
    headers: dict[str, str]  # lower-case names
    body: bytes
    started: float  # time.monotonic() once the request was read
    finished: float | None = None  # ... when the answer went out (None: dropped)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)

    @property
    def key(self) -> str | None:
        return self.headers.get("idempotency-key")


class FakeReceiver:
    """Records every POST; `replies[i]` (or `script(request)`) decides the i-th answer."""

    def __init__(self) -> None:
        self.replies: dict[int, Reply] = {}
        self.script: Callable[[Received], Reply] | None = None
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url(self, path_and_query: str = "/ingest") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path_and_query}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self) -> list[bytes]:
        return [r.body for r in self.requests]

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: connection reuse is exercised
            disable_nagle_algorithm = True  # else delayed ACKs add ~40 ms per answer

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake._lock:
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    received = Received(
                        index=len(fake.requests),
                        target=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=body,
                        started=time.monotonic(),
                    )
                    fake.requests.append(received)
                try:
                    reply = (fake.script or (lambda r: fake.replies.get(r.index, Reply())))(received)
                    time.sleep(reply.delay)
                    if reply.drop:
                        self.close_connection = True
                        return
                    payload = reply.body
                    if payload is None:
                        payload = json.dumps({"chunk_id": received.key or f"srv-{received.index}"}).encode()
                    received.finished = time.monotonic()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

        return Handler


@pytest.fixture
def fake():
    receiver = FakeReceiver()
    yield receiver
    receiver.close()


# --- helpers --------------------------------------------------------------------------


def pcm_of(seconds: float, rate: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(round(seconds * rate) * 2)


def write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


RUN_ARGUMENTS = ("ledger", "stop", "session", "progress")  # stream()'s own keywords
RETRIES = {
    "retry_delays": "delays",
    "breaker_threshold": "breaker_threshold",
    "breaker_cooldown": "breaker_cooldown",
    "disable_after": "disable_after",
}


def options(**settings) -> simulate.Options:
    """Options from flat keywords named like the CLI's flags: fast, with TINY retry delays,
    unless told otherwise."""
    settings = {"fast": True, "retry_delays": TINY, **settings}
    retries = {field: settings.pop(name) for name, field in RETRIES.items() if name in settings}
    return simulate.Options(**settings, retries=simulate.Retries(**retries))


def send(fake, pcm, rate=8000, uid="u1", url=None, **settings) -> simulate.Summary:
    run = {name: settings.pop(name) for name in RUN_ARGUMENTS if name in settings}
    return simulate.stream(pcm, rate, url or fake.url("/ingest/secret"), uid, options(**settings), **run)


# --- current mode: chunking -----------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("interval", [1, 2.5, 10])
def test_current_mode_sends_one_second_chunks_and_a_tail(fake, rate, interval):
    pcm = pcm_of(3.5, rate)
    summary = send(fake, pcm, rate, interval=interval)

    assert [len(b) for b in fake.bodies()] == [2 * rate] * 3 + [rate]
    assert b"".join(fake.bodies()) == pcm
    assert summary.ok and summary.acked == summary.chunks == summary.sent == 4
    assert summary.bytes_acked == len(pcm)
    for request in fake.requests:
        assert request.headers["content-type"] == "application/octet-stream"
        assert request.path == "/ingest/secret"
        assert request.query == {"sample_rate": [str(rate)], "uid": ["u1"]}


def test_exact_seconds_have_no_tail(fake):
    send(fake, pcm_of(2, 16000), 16000)
    assert [len(b) for b in fake.bodies()] == [32000, 32000]


def test_query_is_merged_existing_parameters_kept(fake):
    url = fake.url("/ingest/secret?token=abc&sample_rate=44100&x=a%20b&uid=someone&e=")
    send(fake, pcm_of(1, 8000), url=url, uid="dev_1-A")

    (request,) = fake.requests
    assert request.query == {"token": ["abc"], "x": ["a b"], "e": [""], "sample_rate": ["8000"], "uid": ["dev_1-A"]}
    assert request.target.count("?") == 1


def test_requests_go_one_after_another(fake):
    fake.script = lambda r: Reply(delay=0.03)
    send(fake, pcm_of(5, 8000), interval=5)

    assert len(fake.requests) == 5
    assert fake.max_in_flight == 1
    for before, after in pairwise(fake.requests):
        assert after.started >= before.finished


# --- current mode: keys and retries ---------------------------------------------------


def test_idempotency_key_stable_across_retries_distinct_across_chunks(fake):
    fake.replies = {0: Reply(500), 1: Reply(503), 3: Reply(408), 4: Reply(429)}
    summary = send(fake, pcm_of(3, 8000))

    keys = [r.key for r in fake.requests]
    assert len(keys) == 7
    assert keys[0] == keys[1] == keys[2]
    assert keys[3] == keys[4] == keys[5]
    assert len({keys[0], keys[3], keys[6]}) == 3
    assert all(uuid.UUID(k).version == 4 for k in keys)
    assert fake.bodies()[0] == fake.bodies()[1] == fake.bodies()[2]
    assert summary.ok
    assert (summary.sent, summary.acked, summary.retried, summary.failed) == (7, 3, 4, 0)
    assert summary.statuses == {"500": 1, "503": 1, "408": 1, "429": 1, "200": 3}


def test_retries_wait_the_configured_delays_then_the_chunk_fails(fake):
    fake.script = lambda r: Reply(500)
    delays = (0.1, 0.2, 0.3)
    summary = send(fake, pcm_of(1, 8000), retry_delays=delays)

    assert len(fake.requests) == 4
    gaps = [b.started - a.finished for a, b in pairwise(fake.requests)]
    for gap, delay in zip(gaps, delays, strict=True):
        assert delay <= gap < delay + 0.5
    assert (summary.sent, summary.retried, summary.failed, summary.acked) == (4, 3, 1, 0)
    assert not summary.ok


def test_connection_errors_are_retried(fake):
    fake.replies = {0: Reply(drop=True), 1: Reply(drop=True)}
    summary = send(fake, pcm_of(1, 8000))

    assert len({r.key for r in fake.requests}) == 1
    assert (summary.sent, summary.retried, summary.acked) == (3, 2, 1)
    assert summary.statuses == {"error": 2, "200": 1}


def test_connection_refused_fails_after_four_attempts():
    url = f"http://127.0.0.1:{free_port()}/ingest"
    summary = simulate.stream(pcm_of(1, 8000), 8000, url, "u1", options())
    assert (summary.sent, summary.retried, summary.failed) == (4, 3, 1)
    assert summary.statuses == {"error": 4}


def test_read_timeout_is_retried(fake):
    fake.replies = {0: Reply(delay=0.5)}
    summary = send(fake, pcm_of(1, 8000), timeout=(2.0, 0.1))
    assert (summary.sent, summary.acked) == (2, 1)
    assert fake.requests[0].key == fake.requests[1].key


@pytest.mark.parametrize("status", [400, 401, 404, 413])
def test_other_4xx_fail_without_retry_and_drop_the_rest_of_the_batch(fake, status):
    fake.replies = {0: Reply(status)}
    pcm = pcm_of(4, 8000)
    summary = send(fake, pcm, interval=2)  # batches [c0, c1], [c2, c3]

    assert len(fake.requests) == 3
    assert fake.bodies() == [pcm[0:16000], pcm[32000:48000], pcm[48000:64000]]
    assert (summary.sent, summary.retried, summary.failed, summary.dropped) == (3, 0, 1, 1)
    assert summary.acked == 2 and not summary.ok


def test_redirect_is_not_followed(fake):
    fake.replies = {0: Reply(307)}
    summary = send(fake, pcm_of(1, 8000))
    assert (summary.sent, summary.failed) == (1, 1)


def test_circuit_breaker_skips_sends_then_recovers(fake):
    fake.replies = {0: Reply(500), 1: Reply(500)}
    # speed 4: a 1-s batch every 0.25 s. c0 and c1 fail (t=0.25, 0.5): the breaker is open
    # until ~0.875 s, so c2 (t=0.75) is skipped and c3.. (t=1.0..) are sent.
    summary = send(
        fake, pcm_of(6, 8000), fast=False, speed=4, retry_delays=(), breaker_threshold=2, breaker_cooldown=0.375
    )

    assert summary.breaker_trips == 1
    assert (summary.sent, summary.failed, summary.dropped, summary.acked) == (5, 2, 1, 3)


def test_breaker_in_fast_mode_drops_what_is_released_while_open(fake):
    fake.script = lambda r: Reply(503)
    summary = send(fake, pcm_of(6, 8000), retry_delays=(), breaker_threshold=2, breaker_cooldown=30)
    assert (summary.sent, summary.failed, summary.dropped) == (2, 2, 4)


def test_sender_disables_itself_after_many_failures(fake):
    fake.script = lambda r: Reply(500)
    summary = send(fake, pcm_of(6, 8000), retry_delays=(), breaker_threshold=100, disable_after=3)
    assert summary.disabled
    assert (summary.sent, summary.failed, summary.dropped) == (3, 3, 3)


# --- legacy mode ----------------------------------------------------------------------


def test_legacy_one_post_per_interval_doubled_question_mark_no_retries(fake):
    fake.replies = {1: Reply(500)}
    pcm = pcm_of(5, 8000)
    summary = send(fake, pcm, mode="legacy", interval=2, url=fake.url("/ingest?token=abc"))

    assert [len(b) for b in fake.bodies()] == [32000, 32000, 16000]
    assert b"".join(fake.bodies()) == pcm
    for request in fake.requests:
        assert request.target == "/ingest?token=abc?sample_rate=8000&uid=u1"
        assert "idempotency-key" not in request.headers
        assert request.headers["content-type"] == "application/octet-stream"
    assert (summary.sent, summary.retried, summary.failed, summary.dropped) == (3, 0, 1, 0)
    assert summary.acked == 2


def test_legacy_plain_url_and_connection_error_not_retried(fake):
    fake.replies = {0: Reply(drop=True)}
    summary = send(fake, pcm_of(2, 16000), 16000, mode="legacy", interval=1)
    assert fake.requests[1].target == "/ingest/secret?sample_rate=16000&uid=u1"
    assert (summary.sent, summary.failed, summary.acked) == (2, 1, 1)


# --- pacing ---------------------------------------------------------------------------


def test_paced_sending_takes_real_time(fake):
    # 1.5 s of audio, batches of 0.5 s: the 1-s chunk is complete at 1.0 s, the tail at 1.5 s.
    started = time.monotonic()
    summary = send(fake, pcm_of(1.5, 8000), interval=0.5, fast=False)

    offsets = [r.started - started for r in fake.requests]
    assert len(offsets) == 2
    assert 0.95 <= offsets[0] < 1.4
    assert 1.45 <= offsets[1] < 1.9
    assert 1.45 <= summary.elapsed_s < 2.5


def test_fast_sending_does_not_wait(fake):
    summary = send(fake, pcm_of(5, 8000), interval=1, fast=True)
    assert summary.sent == 5 and summary.elapsed_s < 1.0


def test_paced_batches_arrive_as_bursts(fake):
    # speed 4, X = 2 s: two back-to-back POSTs at ~0.5 s and two more at ~1.0 s.
    started = time.monotonic()
    send(fake, pcm_of(4, 8000), interval=2, fast=False, speed=4)

    t = [r.started - started for r in fake.requests]
    assert len(t) == 4
    assert t[1] - t[0] < 0.15 and t[3] - t[2] < 0.15
    assert 0.45 <= t[0] < 0.8 and 0.95 <= t[2] < 1.3


def test_legacy_paced(fake):
    started = time.monotonic()
    send(fake, pcm_of(2, 8000), mode="legacy", interval=1, fast=False, speed=4)
    t = [r.started - started for r in fake.requests]
    assert len(t) == 2 and 0.22 <= t[0] < 0.5 and 0.47 <= t[1] < 0.8


def test_pause_stops_sending_for_a_while(fake):
    summary = send(fake, pcm_of(3, 8000), pause_after=1.0, pause_for=0.4)
    t = [r.started for r in fake.requests]
    assert len(t) == 3
    assert t[1] - t[0] >= 0.4 and t[2] - t[1] < 0.2
    assert summary.ok


def test_pause_in_paced_mode_shifts_the_schedule(fake):
    started = time.monotonic()
    send(fake, pcm_of(2, 8000), fast=False, speed=4, pause_after=1, pause_for=0.3)
    t = [r.started - started for r in fake.requests]
    # c0 at 0.25 s; c1 = audio 2 s at 0.5 s, plus the 0.3 s pause.
    assert 0.22 <= t[0] < 0.5 and 0.77 <= t[1] < 1.1


def test_start_offset_and_max_seconds(fake):
    pcm = pcm_of(5, 8000)
    summary = send(fake, pcm, start_offset=1, max_seconds=1.5)
    assert fake.bodies() == [pcm[16000:32000], pcm[32000:40000]]
    assert summary.chunks == 2


def test_stop_event_ends_the_stream(fake):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    summary = send(fake, pcm_of(10, 8000), fast=False, stop=stop)
    assert summary.stopped and not summary.ok
    assert summary.sent == 0 and summary.dropped == 10
    assert summary.elapsed_s < 1


# --- ledger and duplicates ------------------------------------------------------------


def test_ledger_matches_the_bytes_received(fake, tmp_path):
    fake.replies = {
        0: Reply(503),  # retried: one ledger line only
        1: Reply(body=b'{"chunk_id": "srv-abc"}'),  # the receiver's id wins
        2: Reply(201, body=b"stored"),  # no JSON: the Idempotency-Key
    }
    ledger = tmp_path / "ledger.jsonl"
    summary = send(fake, pcm_of(2.5, 16000), 16000, ledger=ledger, uid="dev1")

    entries = simulate.read_ledger(ledger)
    acked = fake.requests[1:]
    assert summary.acked == len(entries) == 3
    assert [e.seq for e in entries] == [0, 1, 2]
    assert [e.chunk_id for e in entries] == ["srv-abc", acked[1].key, acked[2].key]
    for entry, request in zip(entries, acked, strict=True):
        assert entry.sha256 == hashlib.sha256(request.body).hexdigest()
        assert entry.bytes == len(request.body)
        assert (entry.uid, entry.sample_rate) == ("dev1", 16000)
        assert abs(contract.parse_time(entry.acked_at) - contract.now_us()) < 60_000_000
    first_line = json.loads(ledger.read_text().splitlines()[0])
    assert set(first_line) == {"uid", "chunk_id", "bytes", "sha256", "sample_rate", "seq", "acked_at"}


def test_ledger_appends_and_skips_failed_chunks(fake, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    fake.replies = {0: Reply(400)}
    send(fake, pcm_of(2, 8000), interval=1, ledger=ledger)
    send(fake, pcm_of(2, 8000), interval=1, ledger=ledger)
    assert [e.seq for e in simulate.read_ledger(ledger)] == [1, 0, 1]


def test_legacy_ledger_uses_the_receivers_id_or_none(fake, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    fake.replies = {1: Reply(body=b"ok")}
    send(fake, pcm_of(2, 8000), mode="legacy", interval=1, ledger=ledger)
    assert [e.chunk_id for e in simulate.read_ledger(ledger)] == ["srv-0", None]


def test_read_ledger_ignores_a_torn_last_line_only(tmp_path):
    entry = simulate.LedgerEntry("u1", "k", 2, "00", 8000, 0, "2026-01-01T00:00:00.000000Z")
    path = tmp_path / "l.jsonl"
    with open(path, "w") as out:
        simulate.write_ledger_entry(out, entry)
        out.write('{"uid": "u1", "chu')
    assert simulate.read_ledger(path) == [entry]
    path.write_text('{"broken\n' + json.dumps(dataclasses.asdict(entry)) + "\n")
    with pytest.raises(ValueError):
        simulate.read_ledger(path)


def test_duplicates_repeat_the_key_and_stay_out_of_the_ledger(fake, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    summary = send(fake, pcm_of(3, 8000), duplicate_rate=1.0, ledger=ledger)

    keys = [r.key for r in fake.requests]
    assert keys == [keys[0], keys[0], keys[2], keys[2], keys[4], keys[4]]
    assert len(set(keys)) == 3
    assert fake.bodies()[0] == fake.bodies()[1]
    assert (summary.sent, summary.acked, summary.duplicates) == (6, 3, 3)
    assert len(simulate.read_ledger(ledger)) == 3


def test_duplicate_rate_is_reproducible_with_a_seed(fake):
    runs = [send(fake, pcm_of(20, 8000), duplicate_rate=0.5, seed=7).duplicates for _ in range(2)]
    assert runs[0] == runs[1] and 0 < runs[0] < 20


# --- cut uploads ----------------------------------------------------------------------


@dataclasses.dataclass
class RawConnection:
    data: bytes = b""
    first_at: float | None = None  # when the first bytes arrived
    closed_at: float | None = None  # when the client closed its side
    answered: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def head(self) -> bytes:  # request line and header lines, each ending in CRLF
        return self.data.partition(b"\r\n\r\n")[0] + b"\r\n"

    @property
    def body(self) -> bytes:
        return self.data.partition(b"\r\n\r\n")[2]


class RawServer:
    """A listening socket on 127.0.0.1 that records each connection's bytes, as they came,
    until the client closes. It answers 200 once a whole body (per Content-Length) is in,
    so the normal send path can be recorded too; a cut upload never gets an answer."""

    def __init__(self) -> None:
        self.connections: list[RawConnection] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str = "/ingest") -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}{path}"

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def connection(self, index: int) -> RawConnection:
        deadline = time.monotonic() + 5
        while len(self.connections) <= index and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.connections[index].done.wait(5), "the client never closed"
        return self.connections[index]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = RawConnection()
            self.connections.append(record)
            with conn:
                conn.settimeout(5)
                while part := conn.recv(65536):
                    record.first_at = record.first_at or time.monotonic()
                    record.data += part
                    length = re.search(rb"(?im)^content-length: *(\d+)", record.head)
                    if length and len(record.body) == int(length[1]) and not record.answered:
                        record.answered = True
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                record.closed_at = time.monotonic()
            record.done.set()


@pytest.fixture
def raw():
    server = RawServer()
    yield server
    server.close()


@pytest.mark.parametrize("sent", [0, 1, 3199, 3200, 6399])
def test_cut_upload_sends_the_real_head_and_only_the_planned_bytes_then_closes(raw, sent):
    body = pcm_of(0.4, 8000)  # 6400 bytes: one chunk
    assert send(raw, body, uid="u1").ok  # the normal path, answered: the reference
    normal = raw.connection(0)
    assert normal.answered and normal.body == body
    key = re.search(rb"(?m)^Idempotency-Key: ([^\r\n]+)", normal.head)[1].decode()

    url = simulate.current_url(raw.url("/ingest/secret"), 8000, "u1")
    simulate.send_cut(requests.Session(), url, body, key, simulate.Cut(sent))

    cut = raw.connection(1)
    assert cut.head == normal.head  # request line, Host, Content-Length: 6400, key, type...
    assert b"\r\nContent-Length: 6400\r\n" in cut.head
    assert b"\r\nContent-Type: application/octet-stream\r\n" in cut.head
    assert cut.head.startswith(b"POST /ingest/secret?sample_rate=8000&uid=u1 HTTP/1.1\r\n")
    assert cut.data == normal.head + b"\r\n" + body[:sent]  # exactly that much body
    assert not cut.answered and cut.closed_at is not None


@pytest.mark.parametrize("linger", [0.0, 0.4])
def test_cut_upload_closes_at_once_or_after_waiting(raw, linger):
    body = pcm_of(1, 8000)
    started = time.monotonic()
    simulate.send_cut(requests.Session(), raw.url(), body, "k1", simulate.Cut(5000, linger))
    assert time.monotonic() - started >= linger

    cut = raw.connection(0)
    assert cut.body == body[:5000] and not cut.answered
    if linger:
        assert cut.closed_at - cut.first_at >= linger - 0.05  # a slow upload that stops
    else:
        assert cut.closed_at - cut.first_at < 0.4  # dropped at once


def test_plan_cut_stays_inside_the_body_with_empty_odd_even_and_slow_cuts():
    rng = random.Random(1)
    cuts = [simulate.plan_cut(rng, 6400) for _ in range(400)]
    assert all(0 <= c.sent < 6400 for c in cuts)
    assert any(c.sent == 0 for c in cuts)
    assert any(c.sent % 2 for c in cuts) and any(c.sent and c.sent % 2 == 0 for c in cuts)
    assert all(c.linger == 0 or 0 < c.linger <= simulate.CUT_LINGER_MAX for c in cuts)
    assert 0 < sum(c.linger > 0 for c in cuts) < len(cuts) / 2
    assert simulate.plan_cut(rng, 2).sent in (0, 1)


def test_cut_uploads_are_retried_whole_with_the_same_key(fake, tmp_path, monkeypatch):
    monkeypatch.setattr(simulate.cuts, "CUT_LINGER_MAX", 0.15)
    fake.script = lambda r: Reply(drop=len(r.body) < int(r.headers["content-length"]))
    ledger = tmp_path / "ledger.jsonl"
    pcm = pcm_of(3, 8000)
    summary = send(fake, pcm, cut_rate=1.0, seed=3, ledger=ledger)

    assert summary.ok and (summary.sent, summary.cuts, summary.retried, summary.acked) == (6, 3, 3, 3)
    assert summary.statuses == {"cut": 3, "200": 3}
    by_key: dict[str, list] = {}
    for request in fake.requests:
        by_key.setdefault(request.key, []).append(request)
    chunks = [pcm[i : i + 16000] for i in range(0, len(pcm), 16000)]
    assert len(by_key) == len(chunks)
    for chunk, requests_of_chunk in zip(chunks, by_key.values(), strict=True):
        cut, retry = sorted(requests_of_chunk, key=lambda r: len(r.body))
        assert cut.headers["content-length"] == str(len(chunk)) and len(cut.body) < len(chunk)
        assert chunk.startswith(cut.body) and cut.finished is None  # no answer
        assert retry.body == chunk
    # Only the retries' answers reach the ledger.
    assert [e.sha256 for e in simulate.read_ledger(ledger)] == [hashlib.sha256(c).hexdigest() for c in chunks]


# --- input checks ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
def test_read_wav(tmp_path, rate):
    pcm = pcm_of(0.5, rate)
    assert simulate.read_wav(write_wav(tmp_path / "a.wav", pcm, rate)) == (pcm, rate)


def test_read_wav_rejects_other_formats(tmp_path):
    import numpy as np
    import soundfile

    stereo = write_wav(tmp_path / "stereo.wav", pcm_of(0.5, 8000), 8000, channels=2)
    eight_bit = write_wav(tmp_path / "u8.wav", b"\x80" * 800, 8000, width=1)
    floats = tmp_path / "float.wav"
    soundfile.write(floats, np.zeros(800, dtype="float32"), 8000, subtype="FLOAT")
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    for path, words in [
        (stereo, "mono"),
        (eight_bit, "16-bit"),
        (floats, "PCM16"),
        (text, "PCM16"),
        (tmp_path / "missing.wav", "no such file"),
    ]:
        with pytest.raises(simulate.UsageError, match=words):
            simulate.read_wav(path)


@pytest.mark.parametrize(
    "url", ["https://host?x=1", "ftp://host/x", "http:///path", "host/path", "http://host:99999/x"]
)
def test_bad_urls_are_rejected(url):
    with pytest.raises(simulate.UsageError):
        simulate.stream(b"\0\0", 8000, url, "u1")


def test_url_rules_by_mode():
    assert simulate.check_url("https://host/?x=1") == "https://host/?x=1"
    assert simulate.check_url("https://host?x=1", "legacy") == "https://host?x=1"
    assert simulate.current_url("https://h/p?uid=x&a=1", 8000, "u") == "https://h/p?a=1&sample_rate=8000&uid=u"
    assert simulate.legacy_url("https://h/p?a=1", 8000, "u") == "https://h/p?a=1?sample_rate=8000&uid=u"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"uid": "bad uid"},
        {"uid": ""},
        {"mode": "other"},
        {"interval": 0},
        {"duplicate_rate": 1.5},
        {"mode": "legacy", "duplicate_rate": 0.1},
        {"cut_rate": -0.1},
        {"cut_rate": 1.5},
        {"mode": "legacy", "cut_rate": 0.1},
        {"sample_rate": 500},
        {"pcm": b"\0"},
        {"speed": 0},
        {"start_offset": 1},
    ],
)
def test_bad_arguments_are_rejected(kwargs):
    args = {"pcm": b"\0\0", "sample_rate": 8000, "url": "http://127.0.0.1:9/x", "uid": "u1", **kwargs}
    with pytest.raises(simulate.UsageError):
        simulate.stream(
            args.pop("pcm"), args.pop("sample_rate"), args.pop("url"), args.pop("uid"), simulate.Options(**args)
        )


# --- the schedule (pure) --------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(0, 200_000).map(lambda n: n * 2),
    rate=st.sampled_from([8000, 16000, 44100]),
    mode=st.sampled_from(list(simulate.Mode)),
    interval=st.floats(0.1, 30),
    pause_after=st.none() | st.floats(0.1, 20),
)
def test_plan_covers_the_audio_in_order(total, rate, mode, interval, pause_after):
    batches = simulate.plan(total, rate, mode, interval, pause_after)
    pieces = [p for b in batches for p in b.pieces]
    assert [p.seq for p in pieces] == list(range(len(pieces)))
    assert pieces[0].start == 0 if pieces else total == 0
    assert all(a.end == b.start for a, b in pairwise(pieces))
    assert not pieces or pieces[-1].end == total
    releases = [b.release for b in batches]
    assert releases == sorted(set(releases))
    for batch in batches:
        assert all(p.end <= batch.release <= total for p in batch.pieces)
    if mode == "current":  # 1-s chunks, only the very last shorter
        assert all(p.end - p.start == rate * 2 for p in pieces[:-1])
    else:
        limit = max(1, round(interval * rate)) * 2
        assert all(0 < p.end - p.start <= limit for p in pieces)
        assert all(len(b.pieces) == 1 for b in batches)


# --- CLI ------------------------------------------------------------------------------


def cli(*args: str) -> int:
    return simulate_cli.main(list(args))


def test_cli_success_prints_the_summary(fake, tmp_path, capsys):
    wav = write_wav(tmp_path / "a.wav", pcm_of(2.5, 8000), 8000)
    assert cli(str(wav), "--url", fake.url(), "--uid", "u1", "--fast", "--quiet") == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("current uid=u1 rate=8000: sent 3, acked 3/3, retried 0, failed 0")
    assert "bytes acked 40000" in out


def test_cli_json_and_failure_exit_code(fake, tmp_path, capsys):
    fake.replies = {0: Reply(400)}
    wav = write_wav(tmp_path / "a.wav", pcm_of(2, 8000), 8000)
    ledger = tmp_path / "l.jsonl"
    code = cli(
        str(wav),
        "--url",
        fake.url(),
        "--uid",
        "u1",
        "--fast",
        "--json",
        "--retry-delays",
        "0.01,0.01",
        "--ledger",
        str(ledger),
    )
    captured = capsys.readouterr()
    assert code == 1
    result = json.loads(captured.out)
    assert (result["sent"], result["acked"], result["failed"], result["ok"]) == (2, 1, 1, False)
    assert "failed 1" in captured.err
    assert len(simulate.read_ledger(ledger)) == 1


def test_cli_usage_errors_exit_2(fake, tmp_path, capsys):
    wav = write_wav(tmp_path / "a.wav", pcm_of(1, 8000), 8000)
    stereo = write_wav(tmp_path / "s.wav", pcm_of(1, 8000), 8000, channels=2)
    empty = write_wav(tmp_path / "e.wav", b"", 8000)
    assert cli(str(stereo), "--url", fake.url(), "--uid", "u1") == 2
    assert cli(str(empty), "--url", fake.url(), "--uid", "u1") == 2
    assert cli(str(tmp_path / "none.wav"), "--url", fake.url(), "--uid", "u1") == 2
    assert cli(str(wav), "--url", "https://host?x=1", "--uid", "u1") == 2
    assert cli(str(wav), "--url", fake.url(), "--uid", "no spaces") == 2
    with pytest.raises(SystemExit) as exc:
        cli(str(wav), "--url", fake.url())  # --uid missing
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli(str(wav), "--url", fake.url(), "--uid", "u1", "--retry-delays", "1,x")
    assert exc.value.code == 2
    assert fake.requests == []
    assert "a query needs a path" in capsys.readouterr().err


def test_module_entry_point(fake, tmp_path):
    help_text = subprocess.run(
        [sys.executable, "-m", "omi_receiver.devtools.simulate", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in (
        "--mode",
        "--interval",
        "--fast",
        "--ledger",
        "--duplicate-rate",
        "--pause-after",
        "--retry-delays",
        "--json",
    ):
        assert flag in help_text
    wav = write_wav(tmp_path / "a.wav", pcm_of(1, 16000), 16000)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "omi_receiver.devtools.simulate",
            str(wav),
            "--url",
            fake.url(),
            "--uid",
            "u1",
            "--fast",
            "--mode",
            "legacy",
            "--interval",
            "1",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "legacy uid=u1 rate=16000: sent 1, acked 1/1" in run.stdout
    assert run.stderr == ""  # no progress bar when stderr is not a terminal
