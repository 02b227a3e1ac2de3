"""Dead letters: see what waits in the hold subscription, and put valid chunks back.

Messages reach the dead-letter topic two ways: the assembler publishes poison there itself
(attributes or body that break the contract; it adds `error` and `original_message_id`),
and Pub/Sub forwards a chunk the assembler failed to ack MAX_DELIVERY_ATTEMPTS times
(adding the CloudPubSubDeadLetterSource* attributes). Both wait in the pull subscription
`config.dead_letter_hold_subscription`.

`inspect` pulls what waits, describes it (sizes are of the audio: a FLAC payload is decoded)
and gives it all back at once (nack): nothing is consumed. `replay` republishes each valid
chunk to its user's shard topic (the original data as it is, FLAC or PCM, with only the
contract's attributes, `encoding` included, and no ordering key, as ingest publishes) and
acks it on the hold subscription only once Pub/Sub has the copy: a replay killed midway
loses nothing, at worst a chunk is replayed twice and the assembler drops the second copy by chunk_id.
A chunk the user's committed state already holds is acked without republishing, so a
replay never doubles audio. Poison stays in the hold subscription, reported with its reason.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterator

import grpc
from google.api_core import exceptions, retry
from google.auth.exceptions import DefaultCredentialsError

from omi_receiver.ops import explain
from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler.recording import UserState, late_recording
from omi_receiver.runtime.assembler.store import Store
from omi_receiver.runtime.assembler.subscription import Subscription
from omi_receiver.runtime.config import Config, ConfigError
from omi_receiver.runtime.contract import (
    ATTR_ENCODING,
    ATTR_SHARD,
    REQUIRED_ATTRIBUTES,
    Chunk,
    InvalidChunk,
    shard_of,
)

# Attributes Pub/Sub adds when it forwards a message to a dead-letter topic.
ATTR_DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"
ATTR_SOURCE_SUBSCRIPTION = "CloudPubSubDeadLetterSourceSubscription"
# Added by the assembler to the poison it dead-letters itself.
ATTR_ERROR = "error"

# The emulator returns at most 100 messages per pull.
PULL_BATCH = 100
# Pub/Sub may answer a pull with nothing while messages wait: stop after this many in a row.
EMPTY_PULLS = 2
# A pull that times out means "nothing waiting" only on a connected channel: a host that
# takes connections and never answers times out too. This long to find it connected.
CONNECT_SECONDS = 3.0
# Acks and releases: retried this long at most, each try bounded, so a Pub/Sub that goes
# away mid-replay ends the command in seconds (the client's defaults allow a minute).
RPC_RETRY = retry.Retry(
    predicate=retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.DeadlineExceeded),
    initial=0.25,
    maximum=2.0,
    timeout=10.0,
)
RPC_TIMEOUT_SECONDS = 5.0


class DeadLetterError(Exception):
    """Inspecting or replaying cannot go on; the message says why and what to do.
    `report`: what a replay had done before it stopped (None for inspect)."""

    def __init__(self, message: str, report: ReplayReport | None = None):
        super().__init__(message)
        self.report = report


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One message waiting in the hold subscription. uid, chunk_id, received_at and
    sample_rate are the attributes as they came (None when absent), valid or not."""

    message_id: str
    publish_time: dt.datetime  # when it reached the dead-letter topic
    uid: str | None
    chunk_id: str | None
    received_at: str | None
    sample_rate: str | None
    bytes: int  # of the audio (PCM) it carries; of the payload when it cannot be decoded
    payload_bytes: int  # the message's data as it waits (FLAC or PCM)
    encoding: str | None  # the `encoding` attribute as it came (None: PCM, from older ingest)
    delivery_attempts: int | None  # set when Pub/Sub forwarded it after failed deliveries
    source_subscription: str | None  # likewise
    error: str | None  # set when the assembler dead-lettered it as poison
    replayable: bool  # a valid chunk
    reason: str  # why not replayable ("<code>: <detail>"); "" when replayable
    attributes: dict[str, str]  # all of them, as they came


@dataclasses.dataclass
class ReplayReport:
    replayed: list[DeadLetter] = dataclasses.field(default_factory=list)
    already_assembled: list[DeadLetter] = dataclasses.field(default_factory=list)  # acked, not republished
    skipped_poison: list[DeadLetter] = dataclasses.field(default_factory=list)  # left waiting; see .reason
    remaining: int = 0  # messages a peek finds in the hold subscription afterwards (poison included)

    @property
    def taken(self) -> int:
        """Messages taken off the hold subscription (what `limit` counts)."""
        return len(self.replayed) + len(self.already_assembled)


def inspect(config: Config, limit: int | None = None) -> list[DeadLetter]:
    """The messages waiting in the hold subscription (at most `limit`, in whatever order
    Pub/Sub hands them out), sorted by publish time. Nothing is consumed: every message
    pulled is released again before this returns."""
    _require(config, "google_cloud_project")
    path = _hold_subscription(config)
    with _explained(*_hold_context(path)):
        return sorted(
            (describe(m) for m in _peek(_bounded(clients.subscriber(), path), limit)),
            key=lambda d: (d.publish_time, d.message_id),
        )


def replay(
    config: Config,
    limit: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    storage_retry=None,
) -> ReplayReport:
    """Republish the valid chunks waiting in the hold subscription; take at most `limit`
    off it (replayed or already assembled; poison does not count, it stays).

    `progress(done, total)` is called after each message taken off, `total` being `limit`
    (None without one: how many wait is not known in advance). `storage_retry` bounds the
    reads of users' states (Store's own retry without it).
    """
    _require(config, "google_cloud_project", "recordings_bucket")
    path = _hold_subscription(config)
    report = ReplayReport()
    with _explained(*_hold_context(path)):
        hold = _bounded(clients.subscriber(), path)
    with _explained("the chunk topics", "", "roles/pubsub.publisher on the chunk topics"):
        publisher = clients.chunk_publisher()
    with _explained(*_bucket_context(config.recordings_bucket)):
        store = Store(clients.storage_client(), config.recordings_bucket, retry=storage_retry)
    states: dict[str, UserState | None] = {}
    pulled: list[str] = []
    acked: set[str] = set()  # everything else pulled is released at the end
    left = (lambda: None) if limit is None else (lambda: limit - report.taken)
    try:
        with _explained(*_hold_context(path)):
            for batch in _new_messages(hold, left, pulled):
                done: list[str] = []
                try:
                    for received in batch:
                        if _take(received, store, states, publisher, config, report):
                            done.append(received.ack_id)
                            if progress:
                                progress(report.taken, limit)
                finally:
                    hold.ack(done)  # only what Pub/Sub or the state holds
                    acked.update(done)
    except DeadLetterError as exc:
        exc.report = report
        raise
    finally:
        hold.release([a for a in pulled if a not in acked])
    with _explained(*_hold_context(path)):
        report.remaining = len(_peek(hold, None))
    return report


def _take(received, store: Store, states: dict, publisher, config: Config, report: ReplayReport) -> bool:
    """One dead letter: poison stays (False); a chunk the user's state already holds, or one
    republished to its shard's topic, may be acked (True)."""
    letter, chunk = _read(received)
    if chunk is None:
        report.skipped_poison.append(letter)
        return False
    if _already_assembled(store, states, chunk):
        report.already_assembled.append(letter)
    else:
        _republish(publisher, config, received.message.data, letter.attributes, chunk.uid)
        report.replayed.append(letter)
    return True


def describe(received) -> DeadLetter:
    """A pulled message (`ReceivedMessage`) as a DeadLetter."""
    return _read(received)[0]


def _read(received) -> tuple[DeadLetter, Chunk | None]:
    """The DeadLetter, and the chunk it holds (None for poison): decoded once, as a FLAC
    chunk costs a decode."""
    message = received.message
    attributes = dict(message.attributes)
    try:
        chunk = Chunk.from_message(message.data, attributes)
        audio_bytes, reason = len(chunk.data), ""
    except InvalidChunk as exc:
        chunk, audio_bytes, reason = None, len(message.data), f"{exc.code}: {exc.detail}"
    count = attributes.get(ATTR_DELIVERY_COUNT)
    letter = DeadLetter(
        message_id=message.message_id,
        publish_time=message.publish_time,
        uid=attributes.get("uid"),
        chunk_id=attributes.get("chunk_id"),
        received_at=attributes.get("received_at"),
        sample_rate=attributes.get("sample_rate"),
        bytes=audio_bytes,
        payload_bytes=len(message.data),
        encoding=attributes.get(ATTR_ENCODING),
        delivery_attempts=int(count) if count and count.isdigit() else None,
        source_subscription=attributes.get(ATTR_SOURCE_SUBSCRIPTION),
        error=attributes.get(ATTR_ERROR),
        replayable=not reason,
        reason=reason,
        attributes=attributes,
    )
    return letter, chunk


# --- what replay does with one chunk -----------------------------------------------------


def _already_assembled(store: Store, states: dict[str, UserState | None], chunk: Chunk) -> bool:
    """Whether the user's committed state (read once per user per replay) holds the chunk."""
    if chunk.uid not in states:
        with _explained(*_bucket_context(store.bucket_name)):
            states[chunk.uid] = store.read_state(chunk.uid)[0]
    state = states[chunk.uid]
    if state is None:
        return False
    if chunk.chunk_id in state.recent:
        return True
    if chunk.received_at_us >= state.watermark_us:
        return False
    # Behind the watermark and out of the dedup window: the assembler would make it a
    # `-late-` recording of its own (written only if absent). One already there for this
    # chunk means it was assembled.
    with _explained(*_bucket_context(store.bucket_name)):
        blob = store.bucket.get_blob(late_recording(chunk.uid, chunk).name, retry=store.retry)
    return blob is not None and (blob.metadata or {}).get("chunk_id") == chunk.chunk_id


def _republish(publisher, config: Config, data: bytes, attributes: dict[str, str], uid: str) -> None:
    """The original data with the contract's attributes only (not Pub/Sub's dead-letter
    ones, nor `error`), to the uid's shard under the current shard count, as ingest does.
    `encoding` goes along when set: without it a FLAC payload would be read as PCM."""
    shard = shard_of(uid, config.assembler_shards)
    topic = config.topic_path(config.shard_topic(shard))
    clean = {name: attributes[name] for name in (*REQUIRED_ATTRIBUTES, ATTR_ENCODING) if name in attributes}
    clean[ATTR_SHARD] = str(shard)
    with _explained(
        f"chunk topic {topic}",
        "; `terraform apply` in infra/ creates it (locally, `make up`)",
        "roles/pubsub.publisher on it",
    ):
        publisher.publish(topic, data, attributes=clean, timeout=config.publish_timeout_seconds)


# --- pulling without consuming -----------------------------------------------------------


def _bounded(subscriber, path: str) -> Subscription:
    """The subscription at `path`, its acks and releases bounded for someone waiting."""
    return Subscription(subscriber, path, retry=RPC_RETRY, timeout=RPC_TIMEOUT_SECONDS)


def _peek(hold: Subscription, limit: int | None) -> list:
    """Pull up to `limit` distinct messages, then release them all at once."""
    pulled: list[str] = []
    found: list = []
    left = (lambda: None) if limit is None else (lambda: limit - len(found))
    try:
        for batch in _new_messages(hold, left, pulled):
            found.extend(batch)
    finally:
        hold.release(pulled)
    return found


def _new_messages(hold: Subscription, left: Callable[[], int | None], pulled: list[str]) -> Iterator[list]:
    """Batches of messages not seen before in this run, until `left()` is 0 or the
    subscription looks empty. Every ack id pulled is appended to `pulled` (a message whose
    lease ran out comes back with a new one), for the caller to ack or release."""
    seen: set[str] = set()
    empty = 0
    while empty < EMPTY_PULLS:
        wanted = left()
        if wanted is not None and wanted <= 0:
            return
        received = _pull(hold, PULL_BATCH if wanted is None else min(PULL_BATCH, wanted))
        pulled.extend(m.ack_id for m in received)
        new = [m for m in received if m.message.message_id not in seen]
        seen.update(m.message.message_id for m in new)
        empty = 0 if new else empty + 1
        if new:
            yield new


def _pull(hold: Subscription, max_messages: int) -> list:
    """A pull that tells "nothing waiting" from "Pub/Sub out of reach" (which raises)."""
    for attempt in range(3):
        try:
            return hold.pull(max_messages)
        except exceptions.DeadlineExceeded:
            if _connected(hold.subscriber):
                return []  # the emulator holds an empty pull until the timeout
            raise
        except exceptions.ServiceUnavailable:
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    return []


def _connected(subscriber) -> bool:
    ready = grpc.channel_ready_future(subscriber.api.transport.grpc_channel)
    try:
        ready.result(timeout=CONNECT_SECONDS)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        ready.cancel()


# --- errors ------------------------------------------------------------------------------


def _hold_subscription(config: Config) -> str:
    return config.subscription_path(config.dead_letter_hold_subscription)


def _hold_context(subscription: str) -> tuple[str, str, str]:
    return (
        f"dead-letter hold subscription {subscription}",
        "; `terraform apply` in infra/ creates it (locally, `make up`)",
        "roles/pubsub.subscriber on it",
    )


def _bucket_context(bucket: str) -> tuple[str, str, str, str]:
    return f"bucket {bucket}", "", "roles/storage.objectViewer on it", "Cloud Storage"


def _require(config: Config, *names: str) -> None:
    try:
        config.require(*names)
    except ConfigError as exc:
        raise DeadLetterError(str(exc)) from None


@contextlib.contextmanager
def _explained(what: str, create_hint: str, role: str, service: str = "Pub/Sub"):
    """Turn the errors a person can act on into a DeadLetterError saying what to do.
    `service` (Pub/Sub or Cloud Storage) holds `what`: named when it is out of reach."""
    try:
        yield
    except DefaultCredentialsError as exc:
        raise DeadLetterError(explain.NO_CREDENTIALS) from exc
    except exceptions.Unauthenticated as exc:
        raise DeadLetterError(
            f"credentials rejected on {what} ({exc.message}); run `gcloud auth application-default login`"
        ) from exc
    except exceptions.NotFound as exc:
        raise DeadLetterError(f"{what} does not exist{create_hint}") from exc
    except (exceptions.PermissionDenied, exceptions.Forbidden) as exc:
        raise DeadLetterError(f"permission denied on {what}: the caller needs {role} ({exc.message})") from exc
    except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, *explain.UNREACHABLE) as exc:
        raise DeadLetterError(explain.out_of_reach(service, what, exc)) from exc
    except exceptions.GoogleAPICallError as exc:
        raise DeadLetterError(f"request on {what} failed: {exc}") from exc
