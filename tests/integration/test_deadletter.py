"""`dlq inspect` and `dlq replay` (omi_receiver.ops.deadletter) against the real Pub/Sub
emulator and fake-gcs-server.

Dead letters of valid chunks are made the way production makes them, not faked: the
emulator really forwards a message to the dead-letter topic once it was delivered
MAX_DELIVERY_ATTEMPTS (10) times without an ack, adding Pub/Sub's attributes
(CloudPubSubDeadLetterSourceDeliveryCount, ...SourceSubscription, ...SourceTopicPublishTime,
...SourceSubscriptionProject). Nacking a chunk 10 times takes ~0.1 s. Poison comes from a
real assembler pass, which dead-letters it itself with an `error` attribute.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

import pytest
from assembly import audio_of, drain, joined, publish, recordings, speech_stream, stream
from google.api_core import exceptions

from omi_receiver.devtools import resources
from omi_receiver.ops.deadletter import DeadLetterError, inspect, replay
from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.codec import Encoding
from omi_receiver.runtime.contract import Chunk, shard_of

HOUR_US = 3600 * 1_000_000


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def _fresh_chunk_publisher():
    clients.set_chunk_publisher(None)  # emulator_env does not reset this one
    yield
    clients.set_chunk_publisher(None)


def publish_as_ingest(config, chunks: list[Chunk], encoding: Encoding | None = None) -> None:
    """What ingest publishes: the shard's topic, contract attributes + shard, no key;
    encoded as ingest encodes with `encoding`, else as older ingest (no `encoding`)."""
    for chunk in chunks:
        shard = shard_of(chunk.uid, config.assembler_shards)
        data, attributes = (
            (chunk.data, chunk.attributes() | {"shard": str(shard)})
            if encoding is None
            else chunk.message(encoding, shard, wait=True)
        )
        clients.chunk_publisher().publish(
            config.topic_path(config.shard_topic(shard)), data, attributes=attributes, timeout=10
        )


def force_dead_letter(config, chunks: list[Chunk], encoding: Encoding | None = None) -> None:
    """Publish the chunks as ingest does and nack every delivery until Pub/Sub (the
    emulator) forwards them to the dead-letter topic; returns once the hold has them."""
    publish_as_ingest(config, chunks, encoding)
    subscriber = clients.subscriber()
    for shard in range(config.assembler_shards):
        subscription = config.subscription_path(config.shard_subscription(shard))
        attempts: dict[str, int] = {}
        for _ in range(100):
            received = pull(subscriber, subscription)
            if not received and all(n >= resources.MAX_DELIVERY_ATTEMPTS for n in attempts.values()):
                break
            for m in received:
                attempts[m.message.message_id] = m.delivery_attempt
            if received:
                subscriber.modify_ack_deadline(
                    request={
                        "subscription": subscription,
                        "ack_ids": [m.ack_id for m in received],
                        "ack_deadline_seconds": 0,
                    }
                )
        else:
            raise AssertionError(f"not dead-lettered: {attempts}")
    ids = {c.chunk_id for c in chunks}
    for _ in range(20):
        if ids <= {d.chunk_id for d in inspect(config)}:
            return
        time.sleep(0.2)
    raise AssertionError("dead letters never reached the hold subscription")


def pull(subscriber, subscription: str, timeout: float = 1.0) -> list:
    try:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 100}, timeout=timeout, retry=None
        )
    except exceptions.DeadlineExceeded:
        return []
    return list(response.received_messages)


def spy_on_chunk_topic(config, shard: int = 0) -> str:
    """A second subscription on a chunk topic: sees what replay publishes there."""
    name = config.subscription_path(unique("spy"))
    clients.subscriber().create_subscription(
        request={"name": name, "topic": config.topic_path(config.shard_topic(shard))}
    )
    return name


def test_dead_lettered_chunk_is_inspected_replayed_and_assembled_once(stack_config, clock):
    # Recent audio (an hour-old recording would be finalized as idle before the replay).
    first, middle, last = stream("dl", 3, start_us=clock.now - 10 * 1_000_000)
    publish(stack_config, [first])
    drain(Assembler(stack_config, clock=clock))
    force_dead_letter(stack_config, [middle])

    seen = inspect(stack_config)
    again = inspect(stack_config)  # inspecting consumed nothing
    assert [d.message_id for d in again] == [d.message_id for d in seen]
    [letter] = seen
    assert (letter.uid, letter.chunk_id, letter.received_at, letter.sample_rate, letter.bytes) == (
        "dl",
        middle.chunk_id,
        middle.attributes()["received_at"],
        "16000",
        len(middle.data),
    )
    assert letter.delivery_attempts == resources.MAX_DELIVERY_ATTEMPTS
    assert letter.source_subscription.endswith(stack_config.chunks_subscription)
    assert letter.error is None and letter.replayable and letter.reason == ""

    spy = spy_on_chunk_topic(stack_config)
    calls = []
    report = replay(stack_config, progress=lambda done, total: calls.append((done, total)))
    assert [d.chunk_id for d in report.replayed] == [middle.chunk_id]
    assert (report.already_assembled, report.skipped_poison, report.remaining) == ([], [], 0)
    assert calls == [(1, None)]
    # Republished as ingest publishes it: original data, only the contract's attributes.
    [copy] = pull(clients.subscriber(), spy)
    assert copy.message.data == middle.data
    assert dict(copy.message.attributes) == middle.attributes() | {"shard": "0"}
    assert copy.message.ordering_key == ""
    assert inspect(stack_config) == []  # acked on the hold subscription

    publish(stack_config, [last])
    drain(Assembler(stack_config, clock=clock))
    [(_, blob, meta)] = recordings(stack_config, "dl")
    assert audio_of(blob, 16000) == joined([first, middle, last])
    assert meta["chunks"] == "3"


def test_a_dead_lettered_flac_chunk_is_shown_decoded_replayed_as_is_and_assembled(stack_config, clock):
    first, middle, last = speech_stream("dlflac", 3, start_us=clock.now - 10 * 1_000_000)
    publish(stack_config, [first], Encoding.FLAC)
    drain(Assembler(stack_config, clock=clock))
    force_dead_letter(stack_config, [middle], Encoding.FLAC)

    [letter] = inspect(stack_config)
    assert letter.replayable and letter.encoding == "flac"
    assert letter.bytes == len(middle.data)  # the audio it carries
    assert letter.payload_bytes < 0.8 * letter.bytes  # what waits, and is billed

    spy = spy_on_chunk_topic(stack_config)
    assert [d.chunk_id for d in replay(stack_config).replayed] == [middle.chunk_id]
    # Republished as it came: the same FLAC bytes, `encoding` kept, Pub/Sub's attributes not.
    [copy] = pull(clients.subscriber(), spy)
    data, attributes = middle.message(Encoding.FLAC, shard=0, wait=True)
    assert (copy.message.data, dict(copy.message.attributes)) == (data, attributes)
    assert attributes["encoding"] == "flac"

    publish(stack_config, [last], Encoding.FLAC)
    drain(Assembler(stack_config, clock=clock))
    [(_, blob, meta)] = recordings(stack_config, "dlflac")
    assert audio_of(blob, 16000) == joined([first, middle, last])
    assert meta["chunks"] == "3"


def test_replaying_a_chunk_already_assembled_acks_it_without_duplicating(stack_config, clock):
    chunks = stream("done", 3, start_us=clock.now - HOUR_US)
    publish(stack_config, chunks)
    drain(Assembler(stack_config, clock=clock))
    before = recordings(stack_config, "done")
    force_dead_letter(stack_config, [chunks[1]])  # a second copy of an assembled chunk

    spy = spy_on_chunk_topic(stack_config)
    report = replay(stack_config)
    assert [d.chunk_id for d in report.already_assembled] == [chunks[1].chunk_id]
    assert (report.replayed, report.remaining) == ([], 0)
    assert pull(clients.subscriber(), spy) == []  # nothing republished
    assert inspect(stack_config) == []  # but acked
    passes = drain(Assembler(stack_config, clock=clock))
    assert sum(p.pulled for p in passes) == 0
    assert recordings(stack_config, "done") == before
    assert audio_of(before[0][1], 16000) == joined(chunks)


def test_a_late_chunk_assembled_beyond_the_dedup_window_is_not_replayed(stack_config, clock):
    """Its id has left the state's window, but its own `-late-` recording shows it is in."""
    config = dataclasses.replace(stack_config, dedup_window_seconds=1)
    chunks = stream("window", 8, start_us=clock.now - HOUR_US)
    straggler = chunks.pop(3)
    publish(config, chunks)
    drain(Assembler(config, clock=clock))
    publish(config, [straggler])
    drain(Assembler(config, clock=clock))
    before = recordings(config, "window")
    assert len(before) == 2 and any("-late-" in name for name, _, _ in before)
    force_dead_letter(config, [straggler])

    report = replay(config)
    assert [d.chunk_id for d in report.already_assembled] == [straggler.chunk_id]
    assert report.replayed == []
    drain(Assembler(config, clock=clock))
    assert recordings(config, "window") == before


def test_poison_stays_in_the_hold_subscription_with_its_reason(stack_config, clock):
    good, bad = stream("mixed", 2, start_us=clock.now - HOUR_US)
    publisher = clients.publisher()
    topic = stack_config.topic_path(stack_config.chunks_topic)
    publisher.publish(topic, bad.data + b"\x01", **bad.attributes()).result()
    passes = drain(Assembler(stack_config, clock=clock))  # dead-letters it as poison
    assert sum(p.poison for p in passes) == 1
    force_dead_letter(stack_config, [good])

    for _ in range(2):  # and again: poison never leaves, never blocks
        report = replay(stack_config)
        [poison] = report.skipped_poison
        assert poison.chunk_id == bad.chunk_id and poison.error == "odd_length"
        assert not poison.replayable and poison.reason.startswith("odd_length: ")
        assert report.remaining == 1
    assert [d.chunk_id for d in report.replayed] == []  # the good one went the first time
    [left] = inspect(stack_config)
    assert left.message_id == poison.message_id and left.bytes == len(bad.data) + 1
    drain(Assembler(stack_config, clock=clock))
    [(_, blob, _)] = recordings(stack_config, "mixed")
    assert audio_of(blob, 16000) == good.data


def test_a_failed_republish_stops_the_replay_and_loses_nothing(stack_config, clock):
    [chunk] = stream("lost", 1, start_us=clock.now - HOUR_US)
    force_dead_letter(stack_config, [chunk])
    broken = dataclasses.replace(stack_config, chunks_topic=unique("deleted"))
    with pytest.raises(DeadLetterError, match=r"chunk topic .*deleted.* does not exist.*infra/") as caught:
        replay(broken)
    assert caught.value.report.replayed == []
    [letter] = inspect(stack_config)  # released, not acked: still there, at once
    assert letter.chunk_id == chunk.chunk_id
    assert [d.chunk_id for d in replay(stack_config).replayed] == [chunk.chunk_id]


def test_limit_replays_only_n(stack_config, clock):
    chunks = stream("lim", 3, start_us=clock.now - HOUR_US)
    force_dead_letter(stack_config, chunks)
    assert len(inspect(stack_config, limit=2)) == 2
    assert len(inspect(stack_config)) == 3

    calls = []
    report = replay(stack_config, limit=2, progress=lambda done, total: calls.append((done, total)))
    assert len(report.replayed) == 2 and report.remaining == 1
    assert calls == [(1, 2), (2, 2)]
    [left] = inspect(stack_config)
    replayed = {d.chunk_id for d in report.replayed}
    assert {left.chunk_id} | replayed == {c.chunk_id for c in chunks}
    drain(Assembler(stack_config, clock=clock))
    [(_, blob, _)] = recordings(stack_config, "lim")
    assert audio_of(blob, 16000) == joined([c for c in chunks if c.chunk_id in replayed])

    rest = replay(stack_config, limit=2)
    assert [d.chunk_id for d in rest.replayed] == [left.chunk_id] and rest.remaining == 0
    drain(Assembler(stack_config, clock=clock))
    audio = b"".join(audio_of(b, 16000) for _, b, _ in recordings(stack_config, "lim"))
    assert len(audio) == 3 * len(chunks[0].data)
    assert all(audio.count(c.data) == 1 for c in chunks)


def test_replay_goes_to_the_shard_of_the_uid(stack_config, clock):
    config = dataclasses.replace(
        stack_config,
        assembler_shards=3,
        chunks_topic=f"{stack_config.chunks_topic}-sh",
        chunks_subscription=f"{stack_config.chunks_subscription}-sh",
    )
    resources.provision(config)
    users = {f"sharded{i}": stream(f"sharded{i}", 2, start_us=clock.now - HOUR_US, seed=i) for i in range(4)}
    assert len({shard_of(uid, 3) for uid in users}) > 1
    force_dead_letter(config, [c for chunks in users.values() for c in chunks])

    report = replay(config)
    assert len(report.replayed) == 8 and report.remaining == 0
    assembler = Assembler(config, clock=clock)
    for shard in range(3):
        assembler.run_pass(shard)
    for uid, chunks in users.items():
        [(_, blob, _)] = recordings(config, uid)
        assert audio_of(blob, 16000) == joined(chunks)


def test_missing_hold_subscription_is_a_clear_error(stack_config):
    config = dataclasses.replace(stack_config, dead_letter_topic=unique("never-created"))
    hold = config.subscription_path(config.dead_letter_hold_subscription)
    for call in (inspect, replay):
        with pytest.raises(DeadLetterError) as caught:
            call(config)
        message = str(caught.value)
        assert f"dead-letter hold subscription {hold} does not exist" in message
        assert "infra/" in message and "make up" in message


def test_the_local_hold_subscription_has_production_s_ack_deadline(stack_config):
    # A replay killed after its pull leaves the messages out of sight as long as on GCP.
    sub = clients.subscriber().get_subscription(
        subscription=stack_config.subscription_path(stack_config.dead_letter_hold_subscription)
    )
    assert sub.ack_deadline_seconds == resources.HOLD_ACK_DEADLINE_SECONDS == 600
