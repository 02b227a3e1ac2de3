"""Unit tests of omi_receiver.runtime.ingest: every check, auth, the legacy query, publishing.

The requests are real werkzeug requests handed to `ingest.handle`; the publisher is a
recording fake. A fake is acceptable here only: these tests pin the HTTP behaviour, and
tests/integration/test_ingest_pubsub.py runs the same code against the real emulator.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
import threading
import time
import uuid
from pathlib import Path

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud.pubsub_v1.publisher import exceptions as pubsub_exceptions
from werkzeug import Request
from werkzeug.test import EnvironBuilder

from omi_receiver.runtime import clients, codec, contract, ingest
from omi_receiver.runtime.config import Config

DATA = Path(__file__).resolve().parent.parent / "data" / "ingest"
SECOND_16K = (DATA / "speech-1s-16k.pcm").read_bytes()  # 32,000 bytes of speech
TAIL_16K = (DATA / "speech-tail-16k.pcm").read_bytes()  # 4,410 bytes: 137.8125 ms at 16 kHz

TOKEN_A, TOKEN_B = "tok-A_current.secret", "tok-B~rotated"
CONFIG = Config(
    google_cloud_project="proj",
    chunks_topic="chunks",
    ingest_tokens=f"{TOKEN_A}, {TOKEN_B}",
    max_chunk_bytes=64_000,
    publish_timeout_seconds=0.5,
    retry_after_seconds=3,
    # These tests pin the HTTP behaviour on the body as posted; FLAC has its own below.
    chunk_encoding="pcm",
)
TOPIC = "projects/proj/topics/chunks"
OCTET = "application/octet-stream"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class FakePublisher:
    """Records publish() calls (the DirectPublisher interface). Each attempt takes the next
    outcome: "ok", "hang" (no answer until the attempt's timeout), or an exception that
    the attempt raises. The last outcome repeats."""

    def __init__(self, *outcomes):
        self.outcomes = list(outcomes or ["ok"])
        self.attempts: list[dict] = []

    def publish(self, topic, data, *, attributes, timeout):
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        self.attempts.append(dict(topic=topic, data=data, attrs=attributes, timeout=timeout))
        if outcome == "hang":
            time.sleep(timeout)
            raise api_exceptions.DeadlineExceeded("no answer")
        if isinstance(outcome, BaseException):
            raise outcome
        return str(len(self.attempts))


def make_request(
    path=f"/fn/{TOKEN_A}",
    query="sample_rate=16000&uid=u1",
    body=SECOND_16K,
    method="POST",
    headers=None,
    content_type=OCTET,
) -> Request:
    headers = dict(headers or {})
    if content_type is not None:
        headers["Content-Type"] = content_type
    builder = EnvironBuilder(method=method, path=path, query_string=query, data=body, headers=headers)
    return Request(builder.get_environ())


def call(request=None, publisher=None, config=CONFIG, **kwargs):
    publisher = publisher or FakePublisher()
    response = ingest.handle(request or make_request(**kwargs), config, publisher)
    return response, json.loads(response.get_data()), publisher


def log_lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


# --- rejections: status, code, nothing published ------------------------------------------

REJECTIONS = {
    "GET": (dict(method="GET", body=b""), 405, "method_not_allowed"),
    "GET wrong token": (dict(method="GET", path="/fn/nope", body=b""), 405, "method_not_allowed"),
    "PUT": (dict(method="PUT"), 405, "method_not_allowed"),
    "OPTIONS": (dict(method="OPTIONS", body=b""), 405, "method_not_allowed"),
    "no token": (dict(path="/"), 401, "unauthorized"),
    "no token, path of base only": (dict(path="/fn"), 401, "unauthorized"),
    "wrong token": (dict(path="/fn/tok-A_current.secreT"), 401, "unauthorized"),
    "token prefix": (dict(path="/fn/tok-A"), 401, "unauthorized"),
    "token not last": (dict(path=f"/fn/{TOKEN_A}/x"), 401, "unauthorized"),
    "token in query": (dict(path="/fn", query=f"token={TOKEN_A}&sample_rate=16000&uid=u1"), 401, "unauthorized"),
    "wrong bearer": (dict(path="/", headers={"Authorization": "Bearer nope"}), 401, "unauthorized"),
    "basic auth": (dict(path="/", headers={"Authorization": f"Basic {TOKEN_A}"}), 401, "unauthorized"),
    "401 before 400": (dict(path="/fn/nope", query="uid=bad uid"), 401, "unauthorized"),
    "uid missing": (dict(query="sample_rate=16000"), 400, "missing_uid"),
    "uid empty": (dict(query="sample_rate=16000&uid="), 400, "missing_uid"),
    "uid space": (dict(query="sample_rate=16000&uid=a%20b"), 400, "invalid_uid"),
    "uid non-ascii": (dict(query="sample_rate=16000&uid=%C3%BC"), 400, "invalid_uid"),
    "uid too long": (dict(query="sample_rate=16000&uid=" + "a" * 129), 400, "invalid_uid"),
    "uid with a trailing newline": (dict(query="sample_rate=16000&uid=u1%0A"), 400, "invalid_uid"),
    "rate missing": (dict(query="uid=u1"), 400, "missing_sample_rate"),
    "rate empty": (dict(query="uid=u1&sample_rate="), 400, "missing_sample_rate"),
    "rate text": (dict(query="uid=u1&sample_rate=abc"), 400, "invalid_sample_rate"),
    "rate float": (dict(query="uid=u1&sample_rate=16000.0"), 400, "invalid_sample_rate"),
    "rate negative": (dict(query="uid=u1&sample_rate=-16000"), 400, "invalid_sample_rate"),
    "rate low": (dict(query="uid=u1&sample_rate=7999"), 400, "invalid_sample_rate"),
    "rate high": (dict(query="uid=u1&sample_rate=48001"), 400, "invalid_sample_rate"),
    "rate huge": (dict(query="uid=u1&sample_rate=" + "9" * 40), 400, "invalid_sample_rate"),
    "rate leading zero": (dict(query="uid=u1&sample_rate=016000"), 400, "invalid_sample_rate"),
    "rate plus sign": (dict(query="uid=u1&sample_rate=%2B16000"), 400, "invalid_sample_rate"),
    "rate padded": (dict(query="uid=u1&sample_rate=%2016000"), 400, "invalid_sample_rate"),
    "uid twice": (dict(query="sample_rate=16000&uid=a&uid=b"), 400, "duplicate_parameter"),
    "uid twice, same value": (dict(query="sample_rate=16000&uid=u1&uid=u1"), 400, "duplicate_parameter"),
    "rate twice": (dict(query="sample_rate=16000&uid=u1&sample_rate=16000"), 400, "duplicate_parameter"),
    "other parameter twice": (dict(query="x=1&x=2&sample_rate=16000&uid=u1"), 400, "duplicate_parameter"),
    "legacy, uid twice after the ?": (dict(query="x=1?uid=a&sample_rate=16000&uid=b"), 400, "duplicate_parameter"),
    "gzip": (dict(headers={"Content-Encoding": "gzip"}), 415, "unsupported_encoding"),
    "br": (dict(headers={"Content-Encoding": "br"}), 415, "unsupported_encoding"),
    "gzip after identity": (dict(headers={"Content-Encoding": "identity, gzip"}), 415, "unsupported_encoding"),
    "transfer coding gzip": (dict(headers={"Transfer-Encoding": "gzip, chunked"}), 415, "unsupported_encoding"),
    "empty body": (dict(body=b""), 400, "empty_body"),
    "odd body": (dict(body=b"\x00\x01\x02"), 400, "odd_length"),
    "too large": (dict(body=bytes(64_002)), 413, "too_large"),
    "text/plain": (dict(content_type="text/plain"), 415, "unsupported_media_type"),
    "curl default": (dict(content_type="application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
    "wav": (dict(content_type="audio/wav"), 415, "unsupported_media_type"),
    "key empty": (dict(headers={"Idempotency-Key": ""}), 400, "invalid_chunk_id"),
    "key space": (dict(headers={"Idempotency-Key": "a b"}), 400, "invalid_chunk_id"),
    "key too long": (dict(headers={"Idempotency-Key": "k" * 129}), 400, "invalid_chunk_id"),
    "key non-ascii": (dict(headers={"Idempotency-Key": "cl\u00e9"}), 400, "invalid_chunk_id"),
}


@pytest.mark.parametrize("kwargs, status, code", REJECTIONS.values(), ids=REJECTIONS.keys())
def test_rejections_answer_json_and_publish_nothing(kwargs, status, code, capsys):
    response, body, publisher = call(**kwargs)
    assert (response.status_code, body["error"]) == (status, code)
    assert set(body) == {"error", "detail"} and body["detail"]
    assert response.mimetype == "application/json"
    assert publisher.attempts == []
    [entry] = [e for e in log_lines(capsys) if e["event"] == "chunk_rejected"]
    assert (entry["severity"], entry["error"], entry["status"]) == ("WARNING", code, status)


def test_405_names_the_allowed_method():
    response, _, _ = call(method="GET", body=b"")
    assert response.headers["Allow"] == "POST"


def test_401_is_identical_for_missing_and_wrong_tokens():
    answers = [
        call(path="/")[0],
        call(path="/fn/wrong")[0],
        call(path="/fn/wrong", query="uid=x y")[0],
        call(path="/", headers={"Authorization": "Bearer wrong"})[0],
    ]
    assert {(r.status_code, r.get_data(), tuple(sorted(r.headers.items()))) for r in answers} == {
        (answers[0].status_code, answers[0].get_data(), tuple(sorted(answers[0].headers.items())))
    }
    assert answers[0].status_code == 401


def test_rejection_log_has_uid_only_once_valid(capsys):
    call(body=b"")
    call(path="/fn/wrong")
    empty, unauthorized = [e for e in log_lines(capsys) if e["event"] == "chunk_rejected"]
    assert empty["uid"] == "u1"
    assert "uid" not in unauthorized


def test_declared_too_large_body_is_never_held_in_memory():
    """Content-Length over the limit: 413 without reading the body in one piece."""

    class Source(io.RawIOBase):  # 50 MB of zeros, served on demand; records read sizes
        def __init__(self, size):
            self.left, self.largest = size, 0

        def readable(self):
            return True

        def readinto(self, buffer):
            self.largest = max(self.largest, len(buffer))
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    size = 50_000_000
    source = Source(size)
    environ = make_request().environ
    environ.update({"wsgi.input": source, "CONTENT_LENGTH": str(size)})
    response, body, publisher = call(Request(environ))
    assert (response.status_code, body["error"], publisher.attempts) == (413, "too_large", [])
    assert source.largest <= 64 * 1024  # drained block by block, not buffered whole


def test_chunked_body_over_the_limit_is_caught_by_its_actual_length():
    environ = make_request().environ
    environ.update({"wsgi.input": io.BytesIO(bytes(64_010)), "wsgi.input_terminated": True})
    del environ["CONTENT_LENGTH"]
    response, body, publisher = call(Request(environ))
    assert (response.status_code, body["error"], publisher.attempts) == (413, "too_large", [])


def test_chunked_body_within_the_limit_is_accepted():
    environ = make_request().environ
    environ.update({"wsgi.input": io.BytesIO(SECOND_16K), "wsgi.input_terminated": True})
    del environ["CONTENT_LENGTH"]
    response, body, publisher = call(Request(environ))
    assert response.status_code == 200
    assert publisher.attempts[0]["data"] == SECOND_16K


def gunicorn_style(data: bytes, declared: int | None) -> Request:
    """A request as gunicorn passes it: its own stream (here a BytesIO that simply ends),
    `wsgi.input_terminated` set, so werkzeug does not check the length itself."""
    environ = make_request().environ
    environ.update({"wsgi.input": io.BytesIO(data), "wsgi.input_terminated": True})
    if declared is None:
        del environ["CONTENT_LENGTH"]
    else:
        environ["CONTENT_LENGTH"] = str(declared)
    return Request(environ)


@pytest.mark.parametrize("sent", [0, 2, 3200, 6398, 6399])
def test_a_body_cut_short_under_gunicorn_publishes_nothing(sent, capsys):
    """The defect: Content-Length 6400, fewer bytes, the stream ends (client gone)."""
    body = SECOND_16K[:6400]
    response, answer, publisher = call(gunicorn_style(body[:sent], declared=6400))
    assert (response.status_code, answer["error"], publisher.attempts) == (400, "incomplete_body", [])
    assert f"after {sent} of the 6400 bytes" in answer["detail"]
    # The retry with the whole body and the same key is then the one that is published.
    response, _, publisher = call(gunicorn_style(body, declared=6400))
    assert response.status_code == 200 and publisher.attempts[0]["data"] == body


class BrokenStream(io.RawIOBase):
    """Gives `good` bytes, then raises as gunicorn's chunked reader does when the
    connection closes mid-chunk (NoMoreData, an IOError) or the framing is wrong."""

    def __init__(self, good: bytes, error: Exception):
        self.good, self.error = good, error

    def readable(self):
        return True

    def readinto(self, buffer):
        if not self.good:
            raise self.error
        n = min(len(buffer), len(self.good))
        buffer[:n], self.good = self.good[:n], self.good[n:]
        return n


@pytest.mark.parametrize("error", [OSError("No more data after: None"), ValueError("Invalid chunk size")])
def test_a_chunked_body_that_breaks_off_is_400_not_500(error):
    environ = make_request().environ
    environ.update(
        {"wsgi.input": io.BufferedReader(BrokenStream(SECOND_16K[:1000], error)), "wsgi.input_terminated": True}
    )
    del environ["CONTENT_LENGTH"]
    response, answer, publisher = call(Request(environ))
    assert (response.status_code, answer["error"], publisher.attempts) == (400, "incomplete_body", [])


class SlowStream(io.RawIOBase):
    """Hands out `block` bytes per read, `delay` seconds apart: a slow upload."""

    def __init__(self, data: bytes, block: int, delay: float):
        self.data, self.block, self.delay = data, block, delay

    def readable(self):
        return True

    def readinto(self, buffer):
        time.sleep(self.delay)
        n = min(len(buffer), self.block, len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


def test_a_body_slower_than_body_read_seconds_is_408_and_publishes_nothing():
    """Without a socket to watch (no gunicorn), the deadline is checked after each read."""
    config = dataclasses.replace(CONFIG, body_read_seconds=0.3)
    environ = make_request().environ
    environ.update({"wsgi.input": SlowStream(SECOND_16K, block=4000, delay=0.1), "wsgi.input_terminated": True})
    started = time.monotonic()
    response, answer, publisher = call(Request(environ), config=config)
    assert (response.status_code, answer["error"], publisher.attempts) == (408, "body_timeout", [])
    assert "0.3 s" in answer["detail"]
    assert time.monotonic() - started < 1.0
    # The same upload within the deadline is accepted.
    environ = make_request().environ
    environ.update({"wsgi.input": SlowStream(SECOND_16K, block=16000, delay=0.05), "wsgi.input_terminated": True})
    response, _, publisher = call(Request(environ), config=config)
    assert response.status_code == 200 and publisher.attempts[0]["data"] == SECOND_16K


def test_uid_allow_list():
    config = dataclasses.replace(CONFIG, allowed_uids="alice,bob_2")
    response, answer, publisher = call(config=config, query="sample_rate=16000&uid=mallory")
    assert (response.status_code, answer["error"], publisher.attempts) == (403, "uid_not_allowed", [])
    for uid in ("alice", "bob_2"):
        response, _, publisher = call(config=config, query=f"sample_rate=16000&uid={uid}")
        assert response.status_code == 200 and publisher.attempts[0]["attrs"]["uid"] == uid
    # The token is still checked first, and a malformed uid is still a 400.
    assert call(config=config, path="/fn/nope", query="sample_rate=16000&uid=mallory")[0].status_code == 401
    assert call(config=config, query="sample_rate=16000&uid=a/b")[1]["error"] == "invalid_uid"
    # Unset: every valid uid.
    assert call(query="sample_rate=16000&uid=mallory")[0].status_code == 200


def test_refusals_write_a_bounded_number_of_log_lines(capsys):
    """A flood of refusals (anyone can send a wrong token) writes one line per reason."""
    for _ in range(500):
        call(path="/fn/wrong")
    for _ in range(300):
        call(query="sample_rate=016000&uid=u1")
    lines = [e for e in log_lines(capsys) if e["event"] == "chunk_rejected"]
    assert [(e["error"], e["count"]) for e in lines] == [("unauthorized", 1), ("invalid_sample_rate", 1)]


def test_body_shorter_than_content_length_is_400():
    environ = make_request().environ
    environ["CONTENT_LENGTH"] = str(len(SECOND_16K) + 100)
    response, body, publisher = call(Request(environ))
    assert (response.status_code, body["error"], publisher.attempts) == (400, "incomplete_body", [])


# --- accepted requests ------------------------------------------------------------------------

ACCEPTED = {
    "token in path": dict(path=f"/fn/{TOKEN_A}"),
    "token at root": dict(path=f"/{TOKEN_A}"),
    "trailing slash": dict(path=f"/fn/{TOKEN_A}/"),
    "rotated token": dict(path=f"/fn/{TOKEN_B}"),
    "bearer at root": dict(path="/", headers={"Authorization": f"Bearer {TOKEN_A}"}),
    "bearer, lower-case scheme": dict(path="/fn", headers={"Authorization": f"bearer {TOKEN_B}"}),
    # Behind IAM, Authorization holds Google's identity token; the path token still counts.
    "other bearer, path token": dict(headers={"Authorization": "Bearer google-id-token"}),
    "no content type": dict(content_type=None),
    "content type with parameters": dict(content_type="Application/Octet-Stream; charset=binary"),
    "extra query kept": dict(query="x=1&sample_rate=16000&uid=u1"),
    "legacy concatenated query": dict(query="x=1?sample_rate=16000&uid=u1"),
    "legacy, uid first": dict(query="x=1?uid=u1&sample_rate=16000"),
    "legacy, three queries": dict(query="a=?b=2?sample_rate=16000&uid=u1"),
    "uid at the limit": dict(query="sample_rate=16000&uid=" + "a" * 127 + "-"),
    "rate 8000": dict(query="sample_rate=8000&uid=u1"),
    "rate 48000": dict(query="sample_rate=48000&uid=u1"),
    "one sample": dict(body=b"\x01\x80"),
    "content encoding identity": dict(headers={"Content-Encoding": "Identity"}),
    "empty content encoding": dict(headers={"Content-Encoding": ""}),
    "exactly the limit": dict(body=bytes(64_000)),
}


@pytest.mark.parametrize("kwargs", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_requests_publish_one_message(kwargs):
    response, body, publisher = call(**kwargs)
    assert response.status_code == 200, body
    [attempt] = publisher.attempts
    sent = kwargs.get("body", SECOND_16K)
    assert attempt["topic"] == TOPIC
    assert attempt["data"] == sent
    assert set(attempt["attrs"]) == {*contract.REQUIRED_ATTRIBUTES, contract.ATTR_SHARD, contract.ATTR_ENCODING}
    assert attempt["attrs"][contract.ATTR_ENCODING] == "pcm"
    assert body["bytes"] == len(sent)
    assert set(body) == {"chunk_id", "bytes", "duration_ms"}


def test_message_attributes_follow_the_contract():
    before = contract.now_us()
    response, body, publisher = call(query="sample_rate=8000&uid=User_1-x")
    after = contract.now_us()
    attrs = publisher.attempts[0]["attrs"]
    assert attrs["uid"] == "User_1-x"
    assert attrs["sample_rate"] == "8000"
    assert attrs["chunk_id"] == body["chunk_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", attrs["received_at"])
    assert before <= contract.parse_time(attrs["received_at"]) <= after
    assert attrs["shard"] == "0"  # one shard by default
    # The message decodes as the assembler will decode it.
    chunk = contract.Chunk.from_message(publisher.attempts[0]["data"], attrs)
    assert chunk.data == SECOND_16K


def test_idempotency_key_is_the_chunk_id():
    key = str(uuid.uuid4())
    first = call(headers={"Idempotency-Key": key})
    again = call(headers={"Idempotency-Key": key})  # the sender's retry of the same chunk
    for _, body, publisher in (first, again):
        assert body["chunk_id"] == key
        assert publisher.attempts[0]["attrs"]["chunk_id"] == key


def test_without_idempotency_key_each_chunk_gets_a_fresh_uuid4():
    ids = {call()[1]["chunk_id"] for _ in range(3)}
    assert len(ids) == 3 and all(UUID4.match(i) for i in ids)


@pytest.mark.parametrize(
    "rate, body, duration_ms",
    [
        (16000, SECOND_16K, 1000),
        (8000, SECOND_16K, 2000),  # the same bytes from a DevKit1 v1.0.2 last twice as long
        (16000, TAIL_16K, 137.8125),
        (8000, TAIL_16K, 275.625),
    ],
)
def test_duration_ms(rate, body, duration_ms):
    response, answer, _ = call(query=f"sample_rate={rate}&uid=u1", body=body)
    assert response.status_code == 200
    assert answer["duration_ms"] == pytest.approx(duration_ms, abs=0.001)


def test_accepted_chunks_are_not_logged_by_default(capsys):
    assert CONFIG.log_accepted_chunks is False
    response, _, publisher = call(headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200 and len(publisher.attempts) == 1
    call(path=f"/fn/{TOKEN_A}", body=b"")  # a rejection is still logged
    assert [e["event"] for e in log_lines(capsys)] == ["chunk_rejected"]


def test_accept_log_has_the_metric_fields_and_no_secrets(capsys):
    logging_on = dataclasses.replace(CONFIG, log_accepted_chunks=True)
    call(headers={"Idempotency-Key": "k-1"}, config=logging_on)
    call(path="/", headers={"Authorization": f"Bearer {TOKEN_B}"}, config=logging_on)
    call(path=f"/fn/{TOKEN_A}", body=b"", config=logging_on)
    out = capsys.readouterr().out
    assert TOKEN_A not in out and TOKEN_B not in out
    entries = [json.loads(line) for line in out.splitlines()]
    accepted = [e for e in entries if e["event"] == "chunk_accepted"]
    assert len(accepted) == 2
    assert accepted[0]["severity"] == "INFO" and accepted[0]["message"] == "chunk_accepted"
    assert {k: accepted[0][k] for k in ("uid", "chunk_id", "bytes", "sample_rate")} == {
        "uid": "u1",
        "chunk_id": "k-1",
        "bytes": 32000,
        "sample_rate": 16000,
    }
    assert isinstance(accepted[0]["latency_ms"], float)
    assert all(len(line) < 400 for line in out.splitlines())  # no audio in the logs


# --- Pub/Sub failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        api_exceptions.NotFound("topic gone"),
        api_exceptions.PermissionDenied("no"),
        RuntimeError("channel closed"),
    ],
    ids=["not found", "permission denied", "client broken"],
)
def test_publish_failure_is_503_with_retry_after_and_does_not_block_the_user(outcome, capsys):
    started = time.monotonic()
    publisher = FakePublisher(outcome, "ok")
    response, body, _ = call(publisher=publisher, query="sample_rate=16000&uid=u9")
    assert (response.status_code, body["error"]) == (503, "unavailable")
    assert response.headers["Retry-After"] == "3"
    assert time.monotonic() - started < 0.2  # a permanent error is not retried
    # The user's next chunk (or the sender's retry) goes straight through.
    response, _, _ = call(publisher=publisher, query="sample_rate=16000&uid=u9")
    assert response.status_code == 200
    [failed] = [e for e in log_lines(capsys) if e["event"] == "publish_failed"]
    assert (failed["severity"], failed["uid"], failed["bytes"]) == ("ERROR", "u9", 32000)


def test_publish_timeout_is_503_within_the_bound():
    started = time.monotonic()
    response, body, publisher = call(publisher=FakePublisher("hang"))
    elapsed = time.monotonic() - started
    assert (response.status_code, body["error"]) == (503, "unavailable")
    assert response.headers["Retry-After"] == "3"
    assert CONFIG.publish_timeout_seconds - 0.05 <= elapsed < CONFIG.publish_timeout_seconds + 0.3
    assert publisher.attempts[0]["timeout"] <= CONFIG.publish_timeout_seconds


def test_transient_errors_are_retried_until_the_bound():
    started = time.monotonic()
    response, _, publisher = call(publisher=FakePublisher(api_exceptions.ServiceUnavailable("down")))
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < CONFIG.publish_timeout_seconds + 0.3
    assert len(publisher.attempts) >= 3


@pytest.mark.parametrize(
    "first_failure",
    [
        api_exceptions.ServiceUnavailable("blip"),
        api_exceptions.Aborted("contention"),
    ],
    ids=["unavailable", "aborted"],
)
def test_a_transient_failure_then_success_is_200(first_failure):
    response, body, publisher = call(publisher=FakePublisher(first_failure, "ok"))
    assert response.status_code == 200
    assert len(publisher.attempts) == 2
    assert publisher.attempts[0]["attrs"] == publisher.attempts[1]["attrs"]  # same chunk_id


def test_each_publish_attempt_is_bounded_by_the_time_left():
    _, _, publisher = call()
    assert 0 < publisher.attempts[0]["timeout"] <= CONFIG.publish_timeout_seconds


def test_message_too_large_for_pubsub_is_413_not_503():
    too_large = pubsub_exceptions.MessageTooLargeError("over 10 MB")
    response, body, _ = call(publisher=FakePublisher(too_large))
    assert (response.status_code, body["error"]) == (413, "too_large")


def test_a_bug_is_500_internal_without_details(monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise KeyError("secret internals")

    monkeypatch.setattr(contract, "check_pcm", broken)
    response, body, publisher = call()
    assert (response.status_code, body["error"]) == (500, "internal")
    assert "secret" not in response.get_data(as_text=True)
    assert publisher.attempts == []
    assert [e["error"] for e in log_lines(capsys) if e["event"] == "internal_error"] == ["KeyError"]


# --- handle_http: configuration from the environment ------------------------------------------


@pytest.fixture
def fresh_instance(monkeypatch):
    """A new 'instance': config read again from env, the fake publisher as the client."""
    for name in ("GOOGLE_CLOUD_PROJECT", "INGEST_TOKENS", "CHUNKS_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    publisher = FakePublisher()
    ingest.set_config(None)
    clients.set_chunk_publisher(publisher)
    yield publisher
    ingest.set_config(None)
    clients.set_chunk_publisher(None)


def test_handle_http_reads_config_once(fresh_instance, monkeypatch):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p2")
    monkeypatch.setenv("INGEST_TOKENS", f"{TOKEN_A},{TOKEN_B}")
    monkeypatch.setenv("CHUNKS_TOPIC", "t2")
    assert ingest.handle_http(make_request()).status_code == 200
    monkeypatch.setenv("INGEST_TOKENS", "other")  # read once per instance
    assert ingest.handle_http(make_request(path=f"/fn/{TOKEN_B}")).status_code == 200
    assert [a["topic"] for a in fresh_instance.attempts] == ["projects/p2/topics/t2"] * 2


@pytest.mark.parametrize(
    "env, named",
    [
        ({"GOOGLE_CLOUD_PROJECT": "p"}, "INGEST_TOKENS"),
        ({"INGEST_TOKENS": "t"}, "GOOGLE_CLOUD_PROJECT"),
        ({"GOOGLE_CLOUD_PROJECT": "p", "INGEST_TOKENS": " , "}, "INGEST_TOKENS"),
        ({"GOOGLE_CLOUD_PROJECT": "p", "INGEST_TOKENS": "t", "MAX_CHUNK_BYTES": "big"}, "MAX_CHUNK_BYTES"),
    ],
)
def test_missing_config_is_500_misconfigured_and_logged_by_name(fresh_instance, monkeypatch, capsys, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    response = ingest.handle_http(make_request())
    body = json.loads(response.get_data())
    assert (response.status_code, body["error"]) == (500, "misconfigured")
    assert named not in body["detail"]  # named in the logs, not to anonymous callers
    [entry] = [e for e in log_lines(capsys) if e["event"] == "config_invalid"]
    assert named in entry["detail"]
    assert fresh_instance.attempts == []


def test_through_functions_framework(fresh_instance, monkeypatch):
    """main.receive_chunk as the framework serves it (Flask test client)."""
    import functions_framework

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "p")
    monkeypatch.setenv("INGEST_TOKENS", TOKEN_A)
    main_py = Path(__file__).resolve().parents[2] / "main.py"
    client = functions_framework.create_app(target="receive_chunk", source=str(main_py)).test_client()
    ok = client.post(
        f"/{TOKEN_A}?sample_rate=16000&uid=u1",
        data=SECOND_16K,
        headers={"Content-Type": OCTET, "Idempotency-Key": "abc"},
    )
    assert (ok.status_code, ok.get_json()) == (200, {"chunk_id": "abc", "bytes": 32000, "duration_ms": 1000.0})
    assert client.get(f"/{TOKEN_A}").status_code == 405
    assert client.post("/nope?sample_rate=16000&uid=u1", data=SECOND_16K).status_code == 401
    assert len(fresh_instance.attempts) == 1


def test_handle_uses_the_config_it_is_given():
    # handle() takes any Config: a test or a caller can pass a variant.
    variant = dataclasses.replace(CONFIG, ingest_tokens="only-this")
    assert call(config=variant)[0].status_code == 401
    assert call(config=variant, path="/fn/only-this")[0].status_code == 200


def test_chunks_carry_their_users_shard():
    config = dataclasses.replace(CONFIG, assembler_shards=4)
    shards = set()
    for uid in ("alice", "bob", "carol", "dave", "erin", "frank"):
        publisher = FakePublisher()
        ingest.handle(make_request(query=f"sample_rate=16000&uid={uid}"), config, publisher)
        shard = publisher.attempts[0]["attrs"]["shard"]
        assert shard == str(contract.shard_of(uid, 4))
        shards.add(shard)
    assert len(shards) > 1


# --- CHUNK_ENCODING=flac: the checks run on the PCM, the message carries FLAC ---------------

FLAC_CONFIG = dataclasses.replace(CONFIG, chunk_encoding="flac")


@pytest.fixture
def codec_loaded():
    codec.encode(SECOND_16K, 16000, wait=True)  # soundfile imported now, not in the background


def test_flac_publishes_speech_smaller_and_it_decodes_to_the_posted_bytes(codec_loaded):
    response, body, publisher = call(config=FLAC_CONFIG, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200
    [attempt] = publisher.attempts
    attrs, data = attempt["attrs"], attempt["data"]
    assert attrs[contract.ATTR_ENCODING] == "flac" and data[:4] == b"fLaC"
    assert len(data) < 0.8 * len(SECOND_16K)
    assert (attrs["chunk_id"], attrs["sample_rate"], attrs["shard"]) == ("k-1", "16000", "0")
    # The answer and the assembler see the PCM as posted.
    assert (body["bytes"], body["duration_ms"]) == (len(SECOND_16K), 1000.0)
    assert contract.Chunk.from_message(data, attrs).data == SECOND_16K


@pytest.mark.parametrize(
    "body, rate, expected",
    [
        (TAIL_16K, 16000, "flac"),  # an odd number of samples (2,205)
        (SECOND_16K, 8000, "flac"),
        (bytes(64_000), 16000, "flac"),  # silence, exactly the limit
        (b"\x01\x80", 16000, "pcm"),  # one sample: FLAC's headers alone are larger
        (random.Random(7).randbytes(32_000), 16000, "pcm"),  # white noise does not shrink
    ],
    ids=["tail", "8 kHz", "silence at the limit", "one sample", "noise"],
)
def test_flac_or_pcm_whichever_is_smaller_always_the_posted_bytes(codec_loaded, body, rate, expected):
    response, answer, publisher = call(config=FLAC_CONFIG, body=body, query=f"sample_rate={rate}&uid=u1")
    assert response.status_code == 200, answer
    [attempt] = publisher.attempts
    assert attempt["attrs"][contract.ATTR_ENCODING] == expected
    assert (attempt["data"] == body) == (expected == "pcm")
    assert contract.Chunk.from_message(attempt["data"], attempt["attrs"]).data == body


def test_flac_does_not_move_the_size_limit(codec_loaded):
    # Silence over the limit would be a few hundred bytes of FLAC: still 413, nothing published.
    response, body, publisher = call(config=FLAC_CONFIG, body=bytes(64_002))
    assert (response.status_code, body["error"], publisher.attempts) == (413, "too_large", [])


def test_until_the_codec_is_loaded_ingest_publishes_pcm_and_loads_it_in_the_background(monkeypatch):
    monkeypatch.setattr(codec, "_sf", None)  # a fresh instance
    monkeypatch.setattr(codec, "_loader", None)
    gate, loads = threading.Event(), []

    def slow_load():  # stands for the ~0.23 s import: holds until the test lets it go
        gate.wait(10)
        loads.append(1)
        codec._load()

    monkeypatch.setattr(codec, "_load_quietly", slow_load)
    for _ in range(2):
        response, _, publisher = call(config=FLAC_CONFIG)
        assert response.status_code == 200
        [attempt] = publisher.attempts
        assert (attempt["attrs"][contract.ATTR_ENCODING], attempt["data"]) == ("pcm", SECOND_16K)
    loader = codec._loader
    assert loader.is_alive() and not codec.ready()  # started by the first request, once
    gate.set()
    loader.join(10)
    assert loads == [1] and codec.ready()
    _, _, publisher = call(config=FLAC_CONFIG)
    assert publisher.attempts[0]["attrs"][contract.ATTR_ENCODING] == "flac"


def test_with_chunk_encoding_pcm_the_codec_is_never_loaded(monkeypatch):
    monkeypatch.setattr(codec, "_sf", None)
    monkeypatch.setattr(codec, "_loader", None)
    response, _, publisher = call()  # CONFIG: chunk_encoding="pcm"
    assert response.status_code == 200 and publisher.attempts[0]["data"] == SECOND_16K
    assert codec._loader is None and not codec.ready()
