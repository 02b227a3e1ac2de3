"""publisher.DirectPublisher against the Pub/Sub emulator: sent at once when a slot is
free, batched when requests pile up, every message delivered once with its own id, and a
failed RPC fails every chunk it carried."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud import pubsub_v1
from test_ingest_pubsub import pull as drain

from omi_receiver.runtime.ingest import publisher as publisher_module
from omi_receiver.runtime.ingest.publisher import DirectPublisher


def attrs(i: int) -> dict[str, str]:
    return {"uid": f"user-{i % 7}", "n": str(i)}


def test_one_at_a_time_each_message_is_its_own_rpc(stack_config):
    pub = DirectPublisher(pubsub_v1.PublisherClient())
    topic = stack_config.topic_path(stack_config.shard_topic(0))
    ids = [pub.publish(topic, bytes([i]) * 100, attributes=attrs(i), timeout=10) for i in range(5)]
    assert len(set(ids)) == 5 and pub.rpcs == 5
    got = drain(stack_config, 5)
    assert sorted(m.attributes["n"] for m in got) == [str(i) for i in range(5)]
    assert {m.message_id for m in got} == set(ids)


def test_concurrent_publishes_share_rpcs_and_each_lands_once_with_its_own_id(stack_config):
    pub = DirectPublisher(pubsub_v1.PublisherClient(), max_in_flight=1)
    topic = stack_config.topic_path(stack_config.shard_topic(0))
    count = 120
    start = threading.Barrier(12)

    def one(i: int) -> tuple[int, str]:
        if i < 12:
            start.wait()
        return i, pub.publish(topic, i.to_bytes(2, "big") * 2000, attributes=attrs(i), timeout=20)

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = dict(pool.map(one, range(count)))
    assert len(set(results.values())) == count  # one distinct id per message
    assert pub.rpcs < count  # the piled-up ones shared RPCs
    got = drain(stack_config, count)
    assert len(got) == count
    by_id = {m.message_id: m for m in got}
    for i, message_id in results.items():  # each caller got the id of its own message
        message = by_id[message_id]
        assert message.attributes["n"] == str(i) and message.data == i.to_bytes(2, "big") * 2000


def test_a_failed_rpc_fails_every_chunk_it_carried(stack_config):
    pub = DirectPublisher(pubsub_v1.PublisherClient(), max_in_flight=1)
    missing = stack_config.topic_path("no-such-topic")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(pub.publish, missing, b"x", attributes={"n": str(i)}, timeout=10) for i in range(30)]
    for future in futures:
        with pytest.raises(api_exceptions.NotFound):
            future.result()
    # The slots came back: the publisher still works.
    assert pub.publish(stack_config.topic_path(stack_config.shard_topic(0)), b"y", attributes={}, timeout=10)


def test_batches_respect_pubsubs_request_caps(stack_config, monkeypatch):
    monkeypatch.setattr(publisher_module, "MAX_BATCH_BYTES", 50_000)
    pub = DirectPublisher(pubsub_v1.PublisherClient(), max_in_flight=1)
    topic = stack_config.topic_path(stack_config.shard_topic(0))
    sizes: list[int] = []
    real_rpc = pub._rpc
    pub._rpc = lambda request, timeout: (
        sizes.append(sum(len(m.data) for m in request.messages)),
        real_rpc(request, timeout=timeout),
    )[1]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda i: pub.publish(topic, bytes(20_000), attributes={}, timeout=20), range(40)))
    assert sum(sizes) == 40 * 20_000 and max(sizes) <= 50_000
    assert len(drain(stack_config, 40)) == 40


def test_no_free_slot_before_the_deadline_is_a_retryable_deadline_error(stack_config):
    # The emulator cannot be made to hang, so the one RPC in flight is a slow stand-in.
    pub = DirectPublisher(pubsub_v1.PublisherClient(), max_in_flight=1)
    release = threading.Event()

    def slow_rpc(request, timeout):
        release.wait(timeout)
        raise api_exceptions.ServiceUnavailable("slow")

    pub._rpc = slow_rpc
    topic = stack_config.topic_path(stack_config.shard_topic(0))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(pub.publish, topic, b"a", attributes={}, timeout=5)
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(api_exceptions.DeadlineExceeded):
            pub.publish(topic, b"b", attributes={}, timeout=0.3)
        assert time.monotonic() - started < 2
        release.set()
        with pytest.raises(api_exceptions.ServiceUnavailable):
            first.result()
