"""Create the topics, subscriptions and bucket on the local emulators.

Mirrors what infra/ declares in production (names come from Config), so the local stack
and the tests run against the same shape. Idempotent: existing resources are kept.
"""

from __future__ import annotations

from google.api_core import exceptions
from google.cloud import pubsub_v1

from . import clients
from .config import Config

ACK_DEADLINE_SECONDS = 120  # > PASS_SECONDS: a pass never loses its lease on a batch mid-flush
MAX_DELIVERY_ATTEMPTS = 5
TICKS_TOPIC = "assembler-ticks"


def dead_letter_subscription(config: Config) -> str:
    return f"{config.dead_letter_topic}-hold"


def recordings_subscription(config: Config) -> str:
    return f"{config.recordings_topic}-local"


def provision(config: Config) -> None:
    publisher = pubsub_v1.PublisherClient()
    subscriber = clients.subscriber()
    for topic in (config.chunks_topic, config.dead_letter_topic, config.recordings_topic, TICKS_TOPIC):
        try:
            publisher.create_topic(name=config.topic_path(topic))
        except exceptions.AlreadyExists:
            pass
    subscriptions = [
        {
            "name": config.subscription_path(config.chunks_subscription),
            "topic": config.topic_path(config.chunks_topic),
            "ack_deadline_seconds": ACK_DEADLINE_SECONDS,
            "enable_message_ordering": True,
            "dead_letter_policy": {
                "dead_letter_topic": config.topic_path(config.dead_letter_topic),
                "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
            },
        },
        {
            "name": config.subscription_path(dead_letter_subscription(config)),
            "topic": config.topic_path(config.dead_letter_topic),
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
