"""Ingest against the real Pub/Sub emulator: a 200 means the chunk can be pulled.

Requests go to `ingest.handle` with the real publisher client, and once through the
functions-framework CLI (gunicorn) serving main.py, as in production.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path

import pytest
import requests
from google.api_core import exceptions as api_exceptions
from werkzeug import Request
from werkzeug.test import EnvironBuilder

from omi_receiver.devtools import emulators, resources
from omi_receiver.runtime import clients, contract, ingest

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "ingest"
SECOND_16K = (DATA / "speech-1s-16k.pcm").read_bytes()
TAIL_16K = (DATA / "speech-tail-16k.pcm").read_bytes()
TOKEN = "test-token-a"  # stack_config's first token; "test-token-b" is the rotated one
OCTET = "application/octet-stream"


def post(config, *, path=f"/fn/{TOKEN}", query="sample_rate=16000&uid=u1", body=SECOND_16K, headers=None):
    environ = EnvironBuilder(
        method="POST", path=path, query_string=query, data=body, headers={"Content-Type": OCTET, **(headers or {})}
    ).get_environ()
    response = ingest.handle(Request(environ), config, clients.chunk_publisher())
    return response.status_code, json.loads(response.get_data()), response.headers


def pull(config, want: int, within: float = 20.0) -> list:
    """Pull and ack until `want` messages arrived or `within` seconds passed.

    The subscription orders by key: a key's next message comes only after the previous
    ones are acked, so loop pull → ack. An empty pull waits ~9 s on the emulator, hence the
    short per-call timeout.
    """
    subscriber = clients.subscriber()
    subscription = config.subscription_path(config.chunks_subscription)
    messages, deadline = [], time.monotonic() + within
    while len(messages) < want and (left := deadline - time.monotonic()) > 0:
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 50}, timeout=min(3.0, max(left, 0.5)), retry=None
            )
        except api_exceptions.DeadlineExceeded:
            continue
        if response.received_messages:
            messages += [m.message for m in response.received_messages]
            subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
    return messages


def assert_message(message, body, uid, sample_rate, chunk_id):
    # The body as posted once decoded (FLAC or PCM: stack_config has CHUNK_ENCODING=flac,
    # and whether the codec is loaded yet depends on the tests before).
    assert contract.Chunk.from_message(message.data, dict(message.attributes)).data == body
    assert message.ordering_key == ""  # no subscription orders; keyless chunks batch
    assert dict(message.attributes).keys() == {
        *contract.REQUIRED_ATTRIBUTES,
        contract.ATTR_SHARD,
        contract.ATTR_ENCODING,
    }
    assert (message.attributes["uid"], message.attributes["sample_rate"], message.attributes["chunk_id"]) == (
        uid,
        str(sample_rate),
        chunk_id,
    )
    received = contract.parse_time(message.attributes["received_at"])
    assert abs(received - contract.now_us()) < 60_000_000


def test_a_200_chunk_is_in_pubsub_with_exact_bytes_and_attributes(stack_config):
    key = str(uuid.uuid4())
    status, body, _ = post(stack_config, query="sample_rate=8000&uid=user_A-1", headers={"Idempotency-Key": key})
    assert (status, body) == (200, {"chunk_id": key, "bytes": 32000, "duration_ms": 2000.0})
    [message] = pull(stack_config, 1)
    assert_message(message, SECOND_16K, "user_A-1", 8000, key)


def test_retried_idempotency_key_keeps_its_chunk_id_and_order(stack_config):
    key, other = str(uuid.uuid4()), str(uuid.uuid4())
    sent = [(SECOND_16K, key), (SECOND_16K, key), (TAIL_16K, other)]  # chunk, its retry, the tail
    for data, chunk_id in sent:
        status, body, _ = post(stack_config, body=data, headers={"Idempotency-Key": chunk_id})
        assert (status, body["chunk_id"]) == (200, chunk_id)
    messages = pull(stack_config, 3)
    decoded = [contract.Chunk.from_message(m.data, dict(m.attributes)) for m in messages]
    assert [(c.data, c.chunk_id) for c in decoded] == sent  # ordered by uid
    received = [contract.parse_time(m.attributes["received_at"]) for m in messages]
    assert received == sorted(received)


def test_large_chunk_and_legacy_query(stack_config):
    big = bytes(range(256)) * 19_532  # 5,000,192 bytes: over gRPC's default 4 MiB
    status, body, _ = post(
        stack_config,
        query="x=1?sample_rate=16000&uid=legacy",
        body=big,
        headers={"Authorization": "Bearer test-token-b"},
        path="/",
    )
    assert (status, body["bytes"]) == (200, len(big))
    [message] = pull(stack_config, 1)
    assert_message(message, big, "legacy", 16000, body["chunk_id"])


@pytest.mark.slow
def test_pubsub_unreachable_is_503_within_the_bound(stack_config, monkeypatch):
    config = dataclasses.replace(stack_config, publish_timeout_seconds=2.0)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{emulators.free_port()}")  # nothing listens
    clients.set_chunk_publisher(None)  # a fresh client picks up the dead host
    try:
        started = time.monotonic()
        status, body, headers = post(config, headers={"Idempotency-Key": "lost-1"})
        elapsed = time.monotonic() - started
    finally:
        clients.set_chunk_publisher(None)
    assert (status, body["error"]) == (503, "unavailable")
    assert headers["Retry-After"] == str(config.retry_after_seconds)
    assert elapsed < config.publish_timeout_seconds + 1.0
    # Nothing reached the subscription (the subscriber still talks to the live emulator).
    assert pull(stack_config, 1, within=3.0) == []


@pytest.mark.slow
def test_after_a_failed_publish_the_same_uid_publishes_again(stack_config):
    """The topic is missing at first (a NotFound from the real client): 503; once it exists,
    the next chunk of that uid is accepted on the same client and only it is delivered."""
    config = dataclasses.replace(
        stack_config,
        chunks_topic=f"late-{uuid.uuid4().hex[:8]}",
        chunks_subscription=f"late-sub-{uuid.uuid4().hex[:8]}",
    )
    status, body, _ = post(config, headers={"Idempotency-Key": "first"})
    assert (status, body["error"]) == (503, "unavailable")
    resources.provision(config)
    status, body, _ = post(config, headers={"Idempotency-Key": "second"})
    assert (status, body["chunk_id"]) == (200, "second")
    assert [m.attributes["chunk_id"] for m in pull(config, 1)] == ["second"]
    assert pull(config, 1, within=3.0) == []


@pytest.fixture
def served_main(serve_ingest):
    return serve_ingest(
        MAX_CHUNK_BYTES="100000", PUBLISH_TIMEOUT_SECONDS="5", LOG_ACCEPTED_CHUNKS="true"
    )  # read from the environment like every setting


def test_end_to_end_through_functions_framework(stack_config, served_main):
    base, log = served_main
    with requests.Session() as http:  # one kept-alive connection, as a sender would use
        ok = http.post(
            f"{base}/fn/{TOKEN}",
            params={"sample_rate": 16000, "uid": "e2e"},
            data=SECOND_16K,
            headers={"Content-Type": OCTET, "Idempotency-Key": "e2e-1"},
            timeout=15,
        )
        assert (ok.status_code, ok.json()) == (200, {"chunk_id": "e2e-1", "bytes": 32000, "duration_ms": 1000.0})

        rejected = {
            "GET": http.get(f"{base}/fn/{TOKEN}", timeout=15),
            "wrong token": http.post(
                f"{base}/fn/nope?sample_rate=16000&uid=e2e",
                data=SECOND_16K,
                headers={"Content-Type": OCTET},
                timeout=15,
            ),
            "curl default type": http.post(
                f"{base}/fn/{TOKEN}?sample_rate=16000&uid=e2e",
                data=SECOND_16K,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=15,
            ),
            "too large": http.post(
                f"{base}/fn/{TOKEN}?sample_rate=16000&uid=e2e",
                data=bytes(2_000_000),
                headers={"Content-Type": OCTET},
                timeout=15,
            ),
        }
        assert {name: (r.status_code, r.json()["error"]) for name, r in rejected.items()} == {
            "GET": (405, "method_not_allowed"),
            "wrong token": (401, "unauthorized"),
            "curl default type": (415, "unsupported_media_type"),
            "too large": (413, "too_large"),
        }
        assert rejected["GET"].headers["Allow"] == "POST"

        # The legacy sender's concatenated URL, on the same connection after the rejections.
        legacy = http.post(f"{base}/fn/{TOKEN}?x=1?sample_rate=8000&uid=e2e", data=TAIL_16K, timeout=15)
        assert legacy.status_code == 200

    messages = pull(stack_config, 2)
    assert_message(messages[0], SECOND_16K, "e2e", 16000, "e2e-1")
    assert_message(messages[1], TAIL_16K, "e2e", 8000, legacy.json()["chunk_id"])

    lines = log.read_text(errors="replace").splitlines()
    events = [json.loads(line)["event"] for line in lines if line.startswith('{"severity"')]
    assert events.count("chunk_accepted") == 2 and events.count("chunk_rejected") == 4
    assert TOKEN not in log.read_text(errors="replace")


def test_direct_publisher_refuses_a_request_over_pubsubs_cap(stack_config):
    from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError

    with pytest.raises(MessageTooLargeError):
        clients.chunk_publisher().publish(
            stack_config.topic_path(stack_config.chunks_topic), b"\0" * 10_000_002, attributes={"uid": "u1"}, timeout=5
        )
