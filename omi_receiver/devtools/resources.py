"""Create the topics, subscriptions and bucket on the local emulators.

Mirrors what infra/ declares in production (names come from Config), so the local stack
and the tests run against the same shape. Idempotent: existing resources are kept.
"""

from __future__ import annotations

from google.api_core import exceptions
from google.cloud import pubsub_v1

from omi_receiver.runtime import clients
from omi_receiver.runtime.config import Config

# A user whose lease is held by a crashed pass has newer chunks released once per tick
# until the lease expires; leave room for that before a message counts as poison.
MAX_DELIVERY_ATTEMPTS = 10
TICKS_TOPIC = "assembler-ticks"
# The hold subscription's ack deadline, as infra/pubsub.tf sets it: a `dlq replay` that dies
# leaves the messages it pulled out of sight this long, here as in production.
HOLD_ACK_DEADLINE_SECONDS = 600


def recordings_subscription(config: Config) -> str:
    return f"{config.recordings_topic}-local"


def provision(config: Config) -> None:
    publisher = pubsub_v1.PublisherClient()
    subscriber = clients.subscriber()
    shards = range(config.assembler_shards)
    topics = [config.shard_topic(i) for i in shards] + [config.dead_letter_topic, config.recordings_topic, TICKS_TOPIC]
    for topic in topics:
        try:
            publisher.create_topic(name=config.topic_path(topic))
        except exceptions.AlreadyExists:
            pass
    subscriptions = [
        {
            "name": config.subscription_path(config.shard_subscription(shard)),
            "topic": config.topic_path(config.shard_topic(shard)),
            "ack_deadline_seconds": config.ack_deadline_seconds,
            # No ordering: with it a key's next chunks wait until the previous ones are
            # acked, so a pass would see a few chunks per user per pull and flush each
            # user many times per tick. The assembler sorts by received_at instead.
            "enable_message_ordering": False,
            "dead_letter_policy": {
                "dead_letter_topic": config.topic_path(config.dead_letter_topic),
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
        }
        for shard in shards
    ] + [
        {
            "name": config.subscription_path(config.dead_letter_hold_subscription),
            "topic": config.topic_path(config.dead_letter_topic),
            "ack_deadline_seconds": HOLD_ACK_DEADLINE_SECONDS,
        },
        {
            "name": config.subscription_path(recordings_subscription(config)),
            "topic": config.topic_path(config.recordings_topic),
        },
    ]
    for sub in subscriptions:
        try:
            subscriber.create_subscription(request=sub)
        except exceptions.AlreadyExists:
            pass
    if config.recordings_bucket:
        storage = clients.storage_client()
        try:
            storage.create_bucket(config.recordings_bucket)
        except exceptions.Conflict:
            pass
