"""Publish RPCs made by the requests' own threads, batched only when Pub/Sub is the wait.

The client library's batching publisher costs ~1.4 ms of CPU and ~12 ms of latency per
message here: every message is handed to its batching thread and waits for a timer.
Here there is no timer and no extra thread. A request whose topic has no batch waiting
and finds a free slot (MAX_IN_FLIGHT Publish RPCs at once) sends its message at once, in
its own RPC: one request at a time, as from one sender, pays one round trip and nothing
else. When every slot is busy, the requests that arrive meanwhile join one open batch,
and its first member sends it as one RPC when a slot frees. Under load a Publish RPC
(~0.3 ms of CPU whatever its size) is shared by many chunks.

A batch holds one topic's messages. Chunks carry no ordering key: no subscription uses
message ordering (the assembler sorts by received_at), so a user's chunks batch freely.

A failed RPC fails every chunk in it (each request answers 503 and its sender retries
with the same Idempotency-Key); there is no client-side queue that could pause a user.
"""

from __future__ import annotations

import threading
import time

import grpc
from google.api_core import exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher.exceptions import MessageTooLargeError
from google.pubsub_v1.types import PublishRequest, PublishResponse, PubsubMessage

from .. import contract
from ..codec import Encoding

# Raw protobuf classes: skip proto-plus marshalling of the (up to 10 MB) body.
_Request = PublishRequest.pb()
_Response = PublishResponse.pb()
_Message = PubsubMessage.pb()
# Pub/Sub's caps on a whole Publish request.
MAX_REQUEST_BYTES = 10_000_000
MAX_REQUEST_MESSAGES = 1000
# A batch closes at this many bytes of data (room left for attributes and framing).
MAX_BATCH_BYTES = 9_000_000
# Publish RPCs of one instance in flight at once before new chunks wait and batch: 2 keeps
# one round trip's latency at low load and lets batches form when requests pile up.
MAX_IN_FLIGHT = 2


class _Batch:
    def __init__(self, topic: str):
        self.topic = topic
        self.messages: list = []
        self.bytes = 0
        self.closed = False  # no more members: it is being sent or has failed
        self.done = threading.Event()
        self.message_ids: list[str] = []
        self.error: Exception | None = None

    def fits(self, size: int) -> bool:
        return not self.closed and len(self.messages) < MAX_REQUEST_MESSAGES and self.bytes + size <= MAX_BATCH_BYTES


class DirectPublisher:
    def __init__(self, client: pubsub_v1.PublisherClient | None = None, max_in_flight: int = MAX_IN_FLIGHT):
        # The library client knows the endpoint, credentials and PUBSUB_EMULATOR_HOST;
        # borrow its channel (it starts no threads until its own publish() is used).
        client = client or pubsub_v1.PublisherClient()
        self._client = client
        self._rpc = client.transport.grpc_channel.unary_unary(
            "/google.pubsub.v1.Publisher/Publish",
            request_serializer=_Request.SerializeToString,
            response_deserializer=_Response.FromString,
        )
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        self._open: dict[str, _Batch] = {}  # the batch new chunks join, per topic
        self._slots = threading.Condition()
        self.rpcs = 0  # Publish RPCs sent (tests and the benchmark read it)

    def publish(self, topic: str, data: bytes, *, attributes: dict[str, str], timeout: float) -> str:
        """Publish one message; returns its id once Pub/Sub has it. Raises api_core errors."""
        message = _Message(data=data, attributes=attributes)
        if len(data) > MAX_REQUEST_BYTES - 65_536 and message.ByteSize() + len(topic) + 16 > MAX_REQUEST_BYTES:
            raise MessageTooLargeError(
                f"a message of {message.ByteSize()} bytes exceeds the request cap of {MAX_REQUEST_BYTES}"
            )
        deadline = time.monotonic() + timeout
        with self._slots:
            batch = self._open.get(topic)
            if batch is not None and batch.fits(len(data)):
                batch.messages.append(message)
                batch.bytes += len(data)
                index, sender = len(batch.messages) - 1, False
            else:
                batch = _Batch(topic)
                batch.messages.append(message)
                batch.bytes = len(data)
                index, sender = 0, True
                # Open for others only while it waits for a slot; sent at once otherwise.
                if self._in_flight >= self._max_in_flight:
                    self._open[topic] = batch
                while self._in_flight >= self._max_in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._fail(batch, exceptions.DeadlineExceeded("no free Publish slot before the deadline"))
                        raise batch.error
                    self._slots.wait(remaining)
                self._in_flight += 1
                batch.closed = True
                if self._open.get(topic) is batch:
                    del self._open[topic]
        if sender:
            self._send(batch, deadline)
        elif not batch.done.wait(max(0.0, deadline - time.monotonic())):
            raise exceptions.DeadlineExceeded("the Publish RPC carrying this message did not finish in time")
        if batch.error is not None:
            raise batch.error
        return batch.message_ids[index]

    def _send(self, batch: _Batch, deadline: float) -> None:
        try:
            request = _Request(topic=batch.topic, messages=batch.messages)
            self.rpcs += 1
            response = self._rpc(request, timeout=max(0.001, deadline - time.monotonic()))
            batch.message_ids = list(response.message_ids)
        except grpc.RpcError as exc:
            batch.error = exceptions.from_grpc_error(exc)
        except Exception as exc:  # noqa: BLE001 - every member must hear of it
            batch.error = exc
        finally:
            with self._slots:
                self._in_flight -= 1
                self._slots.notify()
            batch.done.set()

    def _fail(self, batch: _Batch, error: Exception) -> None:
        """Called holding the lock: the batch never got a slot."""
        batch.error = error
        batch.closed = True
        if self._open.get(batch.topic) is batch:
            del self._open[batch.topic]
        batch.done.set()


# What a publish attempt may fail with and still succeed when tried again: the codes the
# client library retries by default.
_RETRYABLE = (
    exceptions.Aborted,
    exceptions.Cancelled,
    exceptions.DeadlineExceeded,
    exceptions.InternalServerError,
    exceptions.ResourceExhausted,
    exceptions.ServiceUnavailable,
    exceptions.Unknown,
)


def publish_chunk(
    publisher, topic: str, chunk: contract.Chunk, timeout: float, shard: int, encoding: Encoding
) -> tuple[int, Encoding]:
    """Publish and wait until Pub/Sub has the message, within `timeout` seconds in all;
    returns the size and encoding of the data published.

    The chunk is encoded once, before the first attempt (contract.Chunk.message: FLAC when
    `encoding` is FLAC, it pays and the codec is loaded; PCM otherwise), after every check
    of the request ran on the PCM.

    Each attempt gets the time left; transient errors are retried here until the time is
    spent. A timed-out attempt may still land later; the sender retries with the same
    Idempotency-Key and the assembler drops duplicates by chunk_id. (DirectPublisher above: Publish
    RPCs from the request threads, no client-side ordering queue that could block a user.)
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    data, attributes = chunk.message(encoding, shard)
    while True:
        remaining = deadline - time.monotonic()
        try:
            publisher.publish(topic, data, attributes=attributes, timeout=remaining)
            return len(data), Encoding(attributes[contract.ATTR_ENCODING])
        except _RETRYABLE:
            if deadline - time.monotonic() <= delay:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
