"""Lazy Google Cloud clients: one per instance, built on first use (lazy.Lazy).

Importing this module needs no credentials. Against the emulators
(PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST) the clients use anonymous credentials.
Tests may swap a client with `set_*`.
"""

from __future__ import annotations

import os

from google.cloud import pubsub_v1, storage

from .lazy import Lazy

# The assembler's publisher (finished-recording events, dead letters): low volume.
PUBLISH_BATCH = pubsub_v1.types.BatchSettings(max_messages=100, max_bytes=9_900_000, max_latency=0.005)


def _make_chunk_publisher():
    """Ingest's publisher: one direct Publish RPC per chunk (ingest/publisher.py)."""
    from .ingest.publisher import DirectPublisher

    return DirectPublisher()


def _make_subscriber() -> pubsub_v1.SubscriberClient:
    host = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not host:
        # The production transport already lifts gRPC's message-size limits.
        return pubsub_v1.SubscriberClient()
    # In emulator mode the client opens a plain channel with gRPC's 4 MiB receive limit;
    # chunks can be ~10 MB, so give it a channel without that limit.
    import grpc
    from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

    channel = grpc.insecure_channel(
        host,
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)],
    )
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


def _make_storage() -> storage.Client:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "local", credentials=AnonymousCredentials()
        )
    return storage.Client()


_publisher = Lazy(lambda: pubsub_v1.PublisherClient(batch_settings=PUBLISH_BATCH))
_chunk_publisher = Lazy(_make_chunk_publisher)
_subscriber = Lazy(_make_subscriber)
_storage = Lazy(_make_storage)

publisher = _publisher.get
chunk_publisher = _chunk_publisher.get
subscriber = _subscriber.get
storage_client = _storage.get
set_publisher = _publisher.set
set_chunk_publisher = _chunk_publisher.set
set_subscriber = _subscriber.set
set_storage = _storage.set
