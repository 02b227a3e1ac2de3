"""Lazy Google Cloud clients: one per instance, built on first use.

Importing this module needs no credentials. Against the emulators
(PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST) the clients use anonymous credentials.
Tests may swap a client with `set_*`.
"""

from __future__ import annotations

import os
import re
import threading

import requests
from google.api_core import exceptions
from google.auth.exceptions import TransportError
from google.cloud import pubsub_v1, storage

_lock = threading.Lock()
_publisher: pubsub_v1.PublisherClient | None = None
_chunk_publisher = None
_subscriber: pubsub_v1.SubscriberClient | None = None
_storage: storage.Client | None = None

# What to tell a person when google.auth finds no credentials (the CLI's commands).
NO_CREDENTIALS = ("no Google Cloud credentials found: run `gcloud auth application-default login`, "
                  "or for the local stack export .local/stack.env (`set -a; . .local/stack.env; set +a`)")

# Which variable points each service at an emulator (its value is named in errors).
EMULATOR_VARS = {"Cloud Storage": "STORAGE_EMULATOR_HOST", "Pub/Sub": "PUBSUB_EMULATOR_HOST"}
# What a request ends in when the service is out of reach: retries ran out, or a transport
# error was not retried (Cloud Storage speaks HTTP through requests and google.auth).
UNREACHABLE = (exceptions.RetryError, requests.RequestException, TransportError)

# The assembler's publisher (finished-recording events, dead letters): low volume.
PUBLISH_BATCH = pubsub_v1.types.BatchSettings(max_messages=100, max_bytes=9_900_000, max_latency=0.005)


def publisher() -> pubsub_v1.PublisherClient:
    global _publisher
    if _publisher is None:
        with _lock:
            if _publisher is None:
                _publisher = pubsub_v1.PublisherClient(
                    batch_settings=PUBLISH_BATCH,
                    publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True),
                )
    return _publisher


def chunk_publisher():
    """Ingest's publisher: one direct Publish RPC per chunk (see publisher.py)."""
    global _chunk_publisher
    if _chunk_publisher is None:
        with _lock:
            if _chunk_publisher is None:
                from .publisher import DirectPublisher

                _chunk_publisher = DirectPublisher()
    return _chunk_publisher


def subscriber() -> pubsub_v1.SubscriberClient:
    global _subscriber
    if _subscriber is None:
        with _lock:
            if _subscriber is None:
                _subscriber = _make_subscriber()
    return _subscriber


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


def storage_client() -> storage.Client:
    global _storage
    if _storage is None:
        with _lock:
            if _storage is None:
                if os.environ.get("STORAGE_EMULATOR_HOST"):
                    from google.auth.credentials import AnonymousCredentials

                    _storage = storage.Client(
                        project=os.environ.get("GOOGLE_CLOUD_PROJECT") or "local",
                        credentials=AnonymousCredentials(),
                    )
                else:
                    _storage = storage.Client()
    return _storage


def out_of_reach(service: str, what: str, exc: BaseException) -> str:
    """One line for a service that could not be reached: where (the emulator host when one
    is set), for what (bucket, subscription), why, and what to check."""
    var = EMULATOR_VARS[service]
    host = os.environ.get(var)
    where = f"{service} at {var}={host}" if host else service
    hint = "is the local stack up (`make status`)?" if host else "check the network and try again"
    return f"cannot reach {where} for {what}: {_why(exc)}; {hint}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, exceptions.RetryError) and exc.cause is not None:
        exc = exc.cause  # retried until the deadline: the last attempt says why
    text = str(exc)
    if "connection refused" in text.lower():
        return "connection refused"
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)  # DNS and socket errors in requests' text
    if errno:
        return errno.group(1).strip().lower()
    if isinstance(exc, (exceptions.DeadlineExceeded, TimeoutError)) or "timed out" in text.lower():
        return "no answer in time"
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def set_publisher(client) -> None:
    global _publisher
    _publisher = client


def set_chunk_publisher(client) -> None:
    global _chunk_publisher
    _chunk_publisher = client


def set_subscriber(client) -> None:
    global _subscriber
    _subscriber = client


def set_storage(client) -> None:
    global _storage
    _storage = client
