"""The assembler: one pass turns waiting chunks into WAV recordings in Cloud Storage.

A tick (Cloud Scheduler -> Pub/Sub -> this function; locally omi_receiver.devtools.ticker) runs
`run_pass`: pull what is waiting on the chunk subscription, group by uid, and per user
flush the batch under a lease taken on the user's state object:

    lease -> upload part -> compose data + part -> upload header -> compose header + data
    into the WAV -> commit state (generation precondition) -> ack -> delete temporaries

The state write is the commit point; everything before it writes names nobody else uses
or rewrites the WAV from data that is a pure function of the batch. A pass killed at
any step leaves the messages unacked; they are redelivered and the chunk ids in the
committed state drop what already made it. docs/design.md has the full argument.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import json
import threading
import time
import uuid
from collections import defaultdict
from typing import Callable

from google.api_core import exceptions

from .. import clients, logs, wav
from ..config import Config
from ..contract import Chunk, InvalidChunk, format_time, now_us, shard_of
from .recording import (Lease, Recording, Rules, ShardLease, UserState, late_recording, plan_batch, state_name,
                        uid_of_state, user_prefixes)
from .store import WAV_CONTENT_TYPE, PreconditionFailed, Store

# An empty pull on the emulator waits ~9 s; real Pub/Sub answers at once when idle.
PULL_TIMEOUT_SECONDS = 2.0
# A chunk is held for the settle window on its first delivery only: every release counts
# as a delivery towards the dead-letter policy (max_delivery_attempts 10).
MAX_HOLD_ATTEMPTS = 2
# A chunk held back at MAX_PASS_BYTES (see _hold_beyond) is committed on this delivery
# rather than held again, well before the dead-letter policy would take it.
MAX_HOLD_BEYOND_ATTEMPTS = 4
# After a pass died: wait this long beyond its last possible pull plus the ack deadline.
SHARD_MARGIN_S = 10
# Stop writing for a user this long before the lease runs out.
LEASE_MARGIN_US = 5_000_000
# An erase marker (UserState.erased_before_us) drops chunks from before the erase that are
# still on their way. None can be after 7 days in a chunk subscription, 7 in the hold
# subscription and, after a `dlq replay`, 7 more in a chunk subscription (infra/pubsub.tf);
# a day more, then the state object, which still names the uid, is deleted.
ERASE_MARKER_KEEP_US = 22 * 86_400 * 1_000_000


@dataclasses.dataclass
class Erased:
    uid: str
    erased_before_us: int  # chunks received before this are dropped if they still arrive
    deleted: list[str]
    failed: list[str]  # could not be deleted (run the erase again)


class LeaseBusy(Exception):
    """Another pass holds this user's lease; the messages go back for redelivery."""


@dataclasses.dataclass
class PassStats:
    shard: int = 0
    skipped: str = ""  # why the pass did nothing, if it did nothing
    pulled: int = 0
    chunks: int = 0
    assembled: int = 0
    duplicates: int = 0
    late: int = 0
    erased: int = 0
    held: int = 0
    # Why collecting ended: "drained" (took what was waiting), "max_pass_bytes" (the rest
    # waits for the next tick: a shard gets more audio per tick than one pass holds) or
    # "time" (half of PASS_SECONDS spent). Either of the last two, pass after pass, means
    # the shard is falling behind.
    stopped: str = ""
    poison: int = 0
    retried: int = 0
    flushes: int = 0
    finalized: int = 0
    seconds: float = 0.0
    storage: dict = dataclasses.field(default_factory=dict)

    def add(self, other: "PassStats") -> None:
        for field in ("chunks", "assembled", "duplicates", "late", "erased", "retried", "flushes", "finalized"):
            setattr(self, field, getattr(self, field) + getattr(other, field))


class Assembler:
    def __init__(self, config: Config, *, storage_client=None, subscriber=None, publisher=None,
                 clock: Callable[[], int] = now_us, hook: Callable[[str], None] | None = None,
                 storage_retry=None):
        config.require("google_cloud_project", "recordings_bucket")
        self.config = config
        self.store = Store(storage_client or clients.storage_client(), config.recordings_bucket, hook, storage_retry)
        self.subscriber = subscriber or clients.subscriber()
        self.publisher = publisher or clients.publisher()
        self.clock = clock
        self.owner = uuid.uuid4().hex
        self.rules = Rules(
            session_gap_us=config.session_gap_seconds * 1_000_000,
            max_recording_us=config.max_recording_seconds * 1_000_000,
            dedup_window_us=config.dedup_window_seconds * 1_000_000,
        )
        self._locks_lock = threading.Lock()
        self._user_locks: dict[str, threading.Lock] = {}

    # --- one pass ----------------------------------------------------------------------

    def run_pass(self, shard: int = 0) -> PassStats:
        """Collect what waits on the shard's subscription, flush each user once, ack."""
        started = time.monotonic()
        stats = PassStats(shard=shard)
        ops_before = dataclasses.asdict(self.store.ops)
        shard_lease = self._take_shard(shard, stats)
        if shard_lease is not None:
            lease, generation = shard_lease
            drained = self._drain(shard, stats, started)
            # Idle is judged against the previous clean drain, never this pass's own: an
            # empty pull can be spurious (a cold channel), and after a dead pass the
            # chunks it held are not committed yet.
            states = list(self.store.list_states())  # one listing for both sweeps
            stats.finalized += self.finalize_idle(shard, lease.drained_us, states)
            self.forget_erase_markers(shard, states)
            if drained:
                # Everything received before this is committed: older than the settle
                # cutoff, and long enough ago for its publish to have finished.
                margin = max(self.config.settle_seconds, self.config.publish_timeout_seconds + 2)
                lease = dataclasses.replace(lease, drained_us=lease.started_us - int(margin * 1_000_000))
            self._release_shard(shard, lease, generation)
        stats.seconds = round(time.monotonic() - started, 3)
        stats.storage = {k: v - ops_before[k] for k, v in dataclasses.asdict(self.store.ops).items()}
        logs.info("assembler_pass", **dataclasses.asdict(stats))
        return stats

    def _take_shard(self, shard: int, stats: PassStats) -> tuple[ShardLease, int] | None:
        """One pass per shard at a time, and none right after a pass died.

        A pass that died (killed, timed out, crashed) leaves its shard lease unreleased and
        the chunks it had pulled unacked: Pub/Sub hands them out again only after the ack
        deadline. Committing the same users' newer chunks before that would put them ahead
        of the older ones, so the shard waits until every chunk that pass could have
        pulled is back in the subscription. The pass is skipped (nothing pulled) until then.
        """
        lease, generation = self.store.read_shard_lease(shard)
        now = self.clock()
        if lease is not None and not lease.released:
            wait_us = max(self.config.lease_seconds,
                          self.config.pass_seconds + self.config.ack_deadline_seconds + SHARD_MARGIN_S) * 1_000_000
            if now < lease.started_us + wait_us:
                stats.skipped = "shard busy" if now < lease.started_us + self.config.lease_seconds * 1_000_000 \
                    else "waiting for a dead pass's chunks to be redelivered"
                return None
            logs.warning("dead_pass_recovered", shard=shard, owner=lease.owner,
                         started_seconds_ago=round((now - lease.started_us) / 1e6, 1))
        # Carry the last clean drain over; a dead pass's lease carries the one before it.
        mine = ShardLease(owner=uuid.uuid4().hex, started_us=now, drained_us=lease.drained_us if lease else 0)
        try:
            return mine, self.store.write_shard_lease(shard, mine, generation)
        except PreconditionFailed:
            stats.skipped = "shard busy"
            return None

    def _release_shard(self, shard: int, lease: ShardLease, generation: int) -> None:
        # Only after a clean pass: if anything above raised, chunks may still be leased to
        # this pass, and the next pass must wait for them as for a dead pass's.
        try:
            self.store.write_shard_lease(shard, dataclasses.replace(lease, released=True), generation)
        except PreconditionFailed:
            logs.warning("shard_lease_lost", shard=shard)  # this pass overran; another took over

    def _drain(self, shard: int, stats: PassStats, started: float) -> bool:
        """Returns whether the pass took everything that was waiting when it started."""
        subscription = self.config.subscription_path(self.config.shard_subscription(shard))
        cutoff_us = self.clock() - int(self.config.settle_seconds * 1_000_000)
        held: list[str] = []  # ack ids of chunks still settling; released when the pass ends
        with concurrent.futures.ThreadPoolExecutor(self.config.flush_workers) as pool:
            stopped = "more"
            while stopped == "more" and time.monotonic() - started < self.config.pass_seconds:
                by_uid, stopped = self._collect(subscription, cutoff_us, held, stats, started)
                futures = [pool.submit(self._flush_and_ack, subscription, uid, items)
                           for uid, items in by_uid.items()]
                for future in futures:
                    stats.add(future.result())
        stats.stopped = "time" if stopped == "more" else stopped  # "more": PASS_SECONDS ended the rounds
        self._release(subscription, held)
        return stopped == "drained" and not stats.retried

    def _collect(self, subscription: str, cutoff_us: int, held: list[str], stats: PassStats,
                 started: float) -> tuple[dict[str, list[tuple[str, Chunk]]], str]:
        """Pull what was waiting when the pass started. Returns (chunks by uid, why it
        stopped): "drained" (a pull came back empty, or twice in a row with only chunks
        newer than the cutoff, which the next pass takes), "more" (MAX_PASS_BYTES and
        nothing held back: flush, then collect again), "max_pass_bytes" (reached, and
        chunks were held back: the rest waits for a tick) or "time" (half of PASS_SECONDS:
        the rest waits for a tick).

        Everything is collected before anything is flushed, so a user is flushed once per
        pass however Pub/Sub spreads their chunks over pull responses.
        """
        by_uid: dict[str, list[tuple[str, Chunk]]] = defaultdict(list)
        collected = 0
        fresh_only = 0  # consecutive pulls that held everything they got
        frontier = cutoff_us  # oldest chunk taken by the latest pull that took any
        attempts: dict[str, int] = {}  # delivery attempt of each chunk taken, by ack id
        while True:
            if collected >= self.config.max_pass_bytes or time.monotonic() - started >= self.config.pass_seconds / 2:
                before = len(held)
                capped = collected >= self.config.max_pass_bytes
                kept = self._hold_beyond(by_uid, frontier, held, stats, attempts, capped)
                if not capped:
                    return kept, "time"
                # Another round may follow only if nothing was held back: it could bring
                # a held user's newer chunks while the held ones stay leased to this pass.
                return kept, "more" if len(held) == before else "max_pass_bytes"
            received = self._pull(subscription)
            if not received:
                return by_uid, "drained"
            stats.pulled += len(received)
            taken = 0
            oldest = None
            for item in received:
                chunk = self._decode_or_dead_letter(subscription, item, stats)
                if chunk is None:
                    continue
                if chunk.received_at_us > cutoff_us and item.delivery_attempt < MAX_HOLD_ATTEMPTS:
                    # Still settling: a straggler received just before it may still be on
                    # its way. Released at the end for the next pass.
                    held.append(item.ack_id)
                    stats.held += 1
                    continue
                by_uid[chunk.uid].append((item.ack_id, chunk))
                attempts[item.ack_id] = item.delivery_attempt
                collected += len(chunk.data)
                taken += 1
                oldest = chunk.received_at_us if oldest is None else min(oldest, chunk.received_at_us)
            if oldest is not None:
                frontier = oldest
            fresh_only = 0 if taken else fresh_only + 1
            if fresh_only >= 2:  # senders keep streaming: what was waiting is taken
                return by_uid, "drained"

    def _hold_beyond(self, by_uid: dict, frontier: int, held: list[str], stats: PassStats,
                     attempts: dict[str, int], capped: bool) -> dict:
        """Collection stopped before the subscription was drained: older chunks of a user
        may still wait there (Pub/Sub without ordering hands out chunks roughly, not
        exactly, oldest first). Commit only what is older than the latest pull's oldest
        chunk, and hold the rest with the chunks still waiting, for the next round.

        Two exceptions keep a backlog moving, because every hold is a delivery counted by
        the dead-letter policy: a chunk delivered MAX_HOLD_BEYOND_ATTEMPTS times is
        committed now, and when MAX_PASS_BYTES (`capped`) stopped a round whose latest pull
        held its oldest chunk (as after redeliveries), so that the rule would commit
        nothing, everything taken is committed, as after a drain: the next pass would only
        meet the same cap. A chunk older than audio already committed then gets a late
        recording of its own: kept, never stalled into the dead-letter topic. (A pass
        stopped by time holds it all: the next pass, with its own budget, takes it.)"""
        kept, beyond = {}, []
        for uid, items in by_uid.items():
            now_items = []
            for ack_id, chunk in items:
                if chunk.received_at_us < frontier or attempts.get(ack_id, 0) >= MAX_HOLD_BEYOND_ATTEMPTS:
                    now_items.append((ack_id, chunk))
                else:
                    beyond.append(ack_id)
            if now_items:
                kept[uid] = now_items
        if not kept and capped:
            return dict(by_uid)
        held.extend(beyond)
        stats.held += len(beyond)
        return kept

    def _pull(self, subscription: str):
        try:
            response = self.subscriber.pull(
                request={"subscription": subscription, "max_messages": self.config.max_messages_per_pull},
                timeout=PULL_TIMEOUT_SECONDS, retry=None,
            )
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            return []
        return list(response.received_messages)

    def _decode_or_dead_letter(self, subscription: str, item, stats: PassStats) -> Chunk | None:
        message = item.message
        try:
            return Chunk.from_message(message.data, dict(message.attributes))
        except InvalidChunk as exc:
            stats.poison += 1
            attributes = dict(message.attributes)
            logs.error("poison_message", error=exc.code, detail=exc.detail, message_id=message.message_id,
                       uid=attributes.get("uid"), chunk_id=attributes.get("chunk_id"), bytes=len(message.data))
            try:
                attributes.update(error=exc.code, original_message_id=message.message_id)
                self.publisher.publish(
                    self.config.topic_path(self.config.dead_letter_topic), message.data, **attributes
                ).result(timeout=30)
            except Exception as publish_error:  # noqa: BLE001 - leave it to the subscription's policy
                logs.error("dead_letter_publish_failed", error=str(publish_error), message_id=message.message_id)
                self._release(subscription, [item.ack_id])
                return None
            self._ack(subscription, [item.ack_id])
            return None

    def _flush_and_ack(self, subscription: str, uid: str, items: list[tuple[str, Chunk]]) -> PassStats:
        ack_ids = [ack_id for ack_id, _ in items]
        try:
            stats = self.flush_user(uid, [chunk for _, chunk in items])
        except (LeaseBusy, PreconditionFailed) as exc:
            logs.warning("flush_deferred", uid=uid, reason=type(exc).__name__, chunks=len(items))
            self._release(subscription, ack_ids)
            return PassStats(chunks=len(items), retried=len(items))
        except Exception as exc:  # noqa: BLE001 - one user's failure must not stop the others
            logs.error("flush_failed", uid=uid, error=repr(exc), chunks=len(items))
            self._release(subscription, ack_ids)
            return PassStats(chunks=len(items), retried=len(items))
        self._ack(subscription, ack_ids)
        return stats

    def _ack(self, subscription: str, ack_ids: list[str]) -> None:
        for start in range(0, len(ack_ids), 2500):
            self.subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": ack_ids[start:start + 2500]}
            )

    def _release(self, subscription: str, ack_ids: list[str]) -> None:
        """Hand messages back at once (nack) instead of waiting for the ack deadline."""
        for start in range(0, len(ack_ids), 2500):
            try:
                self.subscriber.modify_ack_deadline(
                    request={"subscription": subscription, "ack_ids": ack_ids[start:start + 2500],
                             "ack_deadline_seconds": 0}
                )
            except exceptions.GoogleAPICallError as exc:
                # They come back after the ack deadline anyway, only later.
                logs.warning("release_failed", error=repr(exc)[:300], messages=len(ack_ids))

    # --- one user ----------------------------------------------------------------------

    def flush_user(self, uid: str, chunks: list[Chunk]) -> PassStats:
        """Append a batch to the user's recordings. Raises LeaseBusy / PreconditionFailed."""
        return self._under_lease(uid, self._flush_leased, chunks)

    def _under_lease(self, uid: str, work, *args):
        """Run `work(lease, *args)` holding the user's lease. After an ordinary error the
        lease is given back at once; a crash leaves it to expire."""
        with self._user_lock(uid):
            lease = self._acquire(uid)
            try:
                return work(lease, *args)
            except (LeaseBusy, PreconditionFailed):
                raise
            except Exception:
                self._release_lease(lease)
                raise

    def _flush_leased(self, lease: "Leased", chunks: list[Chunk]) -> PassStats:
        uid = lease.state.uid
        plan = plan_batch(lease.state, chunks, self.rules)
        stats = PassStats(chunks=len(chunks), duplicates=len(plan.duplicates), late=len(plan.late),
                          erased=len(plan.erased))
        garbage: list[str] = []
        finished: list[Recording] = []
        for segment in plan.segments:
            rec = segment.recording
            if segment.chunks:
                garbage += self._append(lease, rec, segment.chunks, final=segment.closes)
                stats.flushes += 1
            elif segment.closes:
                garbage += self._materialize(lease, rec, final=True)
            if segment.closes:
                finished.append(rec)
        for chunk in plan.late:
            self._write_late(uid, chunk)
        for rec in finished:
            self._publish_finished(uid, rec)

        plan.state.lease = None
        self._commit(lease, plan.state)

        assembled = [c for s in plan.segments for c in s.chunks]
        stats.assembled = len(assembled) + len(plan.late)
        if stats.assembled:
            logs.info("chunks_assembled", uid=uid, chunks=stats.assembled,
                      bytes=sum(len(c.data) for c in assembled) + sum(len(c.data) for c in plan.late),
                      recording=plan.state.open.name if plan.state.open else None)
        if plan.duplicates:
            logs.info("duplicates_dropped", uid=uid, duplicates=len(plan.duplicates),
                      chunk_ids=[c.chunk_id for c in plan.duplicates[:20]])
        if plan.late:
            logs.warning("late_chunks", uid=uid, chunks=len(plan.late),
                         chunk_ids=[c.chunk_id for c in plan.late[:20]])
        if plan.erased:
            logs.info("erased_chunks_dropped", uid=uid, chunks=len(plan.erased))
        for rec in finished:
            self.store.delete_prefix(rec.work_prefix(uid))
            stats.finalized += 1
        self.store.delete_quietly(garbage)
        return stats

    # --- the lease ---------------------------------------------------------------------

    @dataclasses.dataclass
    class Leased:
        state: UserState
        generation: int  # of the state object, after our lease write
        until_us: int
        tag: str  # unique per flush; names this flush's temporary objects

    def _acquire(self, uid: str) -> "Assembler.Leased":
        """Take the user's lease with a generation-checked write."""
        state, generation = self.store.read_state(uid)
        now = self.clock()
        if state is None:
            state = UserState(uid=uid)
        elif state.lease and state.lease.owner != self.owner and state.lease.until_us > now:
            raise LeaseBusy(uid)
        until = now + self.config.lease_seconds * 1_000_000
        state.lease = Lease(self.owner, until)
        state.write_id = uuid.uuid4().hex
        try:
            generation = self.store.write_state(state, generation)
        except PreconditionFailed:
            raise LeaseBusy(f"{uid}: another pass took the lease first") from None
        state.write_id = uuid.uuid4().hex  # the commit's own id
        return Assembler.Leased(state, generation, until, state.write_id[:10])

    def _commit(self, lease: "Assembler.Leased", state: UserState) -> None:
        self._ensure_lease(lease)
        self.store.write_state(state, lease.generation)

    def _release_lease(self, lease: "Assembler.Leased") -> None:
        """After an ordinary error, give the user back at once (a crash waits for expiry)."""
        state = dataclasses.replace(lease.state, lease=None, write_id=uuid.uuid4().hex)
        try:
            self.store.write_state(state, lease.generation)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass

    def _ensure_lease(self, lease: "Assembler.Leased") -> None:
        # A pass that outlived its lease must not write: another pass may own the user now.
        # The commit's precondition catches the rest; this check keeps a stalled pass from
        # rewriting a WAV that a newer owner already wrote.
        if self.clock() > lease.until_us - LEASE_MARGIN_US:
            raise LeaseBusy(f"{lease.state.uid}: lease expired")

    def _user_lock(self, uid: str) -> threading.Lock:
        with self._locks_lock:
            return self._user_locks.setdefault(uid, threading.Lock())

    # --- writing audio -----------------------------------------------------------------

    def _append(self, lease: "Assembler.Leased", rec: Recording, chunks: list[Chunk], final: bool) -> list[str]:
        """Add chunks to the recording's data object and rewrite its WAV; returns garbage."""
        prefix = rec.work_prefix(lease.state.uid)
        rec.seq += 1
        part = f"{prefix}part-{rec.seq:06d}-{lease.tag}"
        self.store.upload(part, b"".join(c.data for c in chunks))
        if rec.data is None:
            rec.data = part  # a new recording's first part is its data
            garbage = []
        else:
            data = f"{prefix}data-{rec.seq:06d}-{lease.tag}"
            self.store.compose(data, [rec.data, part])
            garbage = [part, rec.data]
            rec.data = data
        return garbage + self._materialize(lease, rec, final)

    def _materialize(self, lease: "Assembler.Leased", rec: Recording, final: bool) -> list[str]:
        """WAV = header + data: a server-side compose, never a download of the recording."""
        uid = lease.state.uid
        status = "final" if final else "open"
        header = f"{rec.work_prefix(uid)}header-{rec.seq:06d}-{lease.tag}-{status}"
        self.store.upload_header(header, rec.sample_rate, rec.bytes)
        self._ensure_lease(lease)
        self.store.compose(rec.name, [header, rec.data], content_type=WAV_CONTENT_TYPE,
                           metadata=rec.metadata(uid, status))
        return [header]

    def _write_late(self, uid: str, chunk: Chunk) -> None:
        """A chunk later than the window: its own one-chunk recording, never dropped."""
        rec = late_recording(uid, chunk)
        meta = rec.metadata(uid, "final")
        meta.update(late="true", chunk_id=chunk.chunk_id)
        # Deterministic name and content, written only if absent: a retry cannot double it.
        self.store.upload(rec.name, wav.header(rec.sample_rate, rec.bytes) + chunk.data,
                          content_type=WAV_CONTENT_TYPE, metadata=meta)
        self._publish_finished(uid, rec, late=True)

    def _publish_finished(self, uid: str, rec: Recording, late: bool = False) -> None:
        event = rec.event(uid, self.config.recordings_bucket, late=late)
        # Published before the state commit: a crash in between repeats the event, never
        # loses it. Consumers de-duplicate on `name`.
        self.publisher.publish(
            self.config.topic_path(self.config.recordings_topic),
            json.dumps(event).encode(), uid=uid, name=rec.name,
        ).result(timeout=30)
        logs.info("recording_finalized",
                  **{k: event[k] for k in ("uid", "uri", "duration_seconds", "bytes", "chunks", "late")})

    # --- idle recordings ---------------------------------------------------------------

    def finalize_idle(self, shard: int = 0, drained_us: int | None = None,
                      states: list[tuple[str, dict[str, str]]] | None = None) -> int:
        """Finalize the shard's open recordings with no chunk for SESSION_GAP_SECONDS before
        `drained_us` (default: now), when all chunks received before it were committed.

        Only the shard's own users: their pass knows no chunk of theirs is still with a
        dead pass (see _take_shard), so an idle recording really is idle.
        """
        if drained_us == 0:
            return 0  # no clean drain known yet
        horizon = (self.clock() if drained_us is None else drained_us) - self.rules.session_gap_us

        def idle(metadata: dict[str, str]) -> bool:
            return metadata.get("open") == "1" and int(metadata.get("last_received_us", "0")) < horizon

        return self._sweep(shard, states, idle, self._finalize_leased, horizon, "finalize")

    def _sweep(self, shard: int, states: list[tuple[str, dict[str, str]]] | None,
               due: Callable[[dict[str, str]], bool], work, horizon_us: int, event: str) -> int:
        """`work(lease, horizon_us)` under the lease of each of the shard's users whose state
        metadata is `due` (from `states`, or a fresh listing); returns the sum of the results.
        A user a pass holds is logged `<event>_deferred` and left for the next tick."""
        count = 0
        for name, metadata in self.store.list_states() if states is None else states:
            if not due(metadata):
                continue
            uid = uid_of_state(name)
            if shard_of(uid, self.config.assembler_shards) != shard:
                continue
            try:
                count += self._under_lease(uid, work, horizon_us)
            except (LeaseBusy, PreconditionFailed):
                logs.info(f"{event}_deferred", uid=uid)
            except Exception as exc:  # noqa: BLE001 - try again next tick
                logs.error(f"{event}_failed", uid=uid, error=repr(exc))
        return count

    def _finalize_leased(self, lease: "Assembler.Leased", horizon_us: int) -> int:
        state = lease.state
        rec = state.open
        if rec is None or rec.last_received_us >= horizon_us:
            self._release_lease(lease)  # a chunk arrived meanwhile: nothing to do
            return 0
        # Rebuild the WAV from committed data: a pass killed before its commit may have
        # left a WAV holding chunks that will be redelivered.
        garbage = self._materialize(lease, rec, final=True)
        self._publish_finished(state.uid, rec)
        state.open = None
        state.lease = None
        self._commit(lease, state)
        # No recording of the user is open now, so all of work/<uid>/ goes: this one's
        # objects, and any an earlier pass left behind (killed between a finalization's
        # commit and this clean-up, or stalled past its lease into a finished recording).
        self.store.delete_prefix(user_prefixes(state.uid)[1])
        self.store.delete_quietly(garbage)
        return 1

    # --- erase -------------------------------------------------------------------------

    def forget_erase_markers(self, shard: int = 0, states: list[tuple[str, dict[str, str]]] | None = None) -> int:
        """Delete the shard's erase markers older than ERASE_MARKER_KEEP_US: by then no chunk
        from before the erase can arrive, and the state object still names the uid."""
        horizon = self.clock() - ERASE_MARKER_KEEP_US

        def old_marker(metadata: dict[str, str]) -> bool:
            return "erased_before_us" in metadata and int(metadata["erased_before_us"]) < horizon

        return self._sweep(shard, states, old_marker, self._forget_leased, horizon, "forget")

    def _forget_leased(self, lease: "Assembler.Leased", horizon_us: int) -> int:
        state = lease.state
        if not state.is_erase_marker() or state.erased_before_us >= horizon_us:
            self._release_lease(lease)  # the user streamed again meanwhile: a state to keep
            return 0
        self._ensure_lease(lease)
        self.store.delete_state(state.uid, lease.generation)
        logs.info("erase_marker_forgotten", uid=state.uid, erased_before=format_time(state.erased_before_us))
        return 1

    def erase_user(self, uid: str, progress: Callable[[str], None] | None = None) -> "Erased":
        """Delete every object of the user: recordings (late ones too), what sits next to
        them (consumer sidecars) and temporaries. Raises LeaseBusy while a pass holds them.

        Under the user's lease no pass writes for them, so the objects listed then are all
        there is of the erased audio, and none is half written. The state object stays,
        holding no audio, as the erase marker: chunks received before the erase that are
        still on their way are dropped when they arrive, not made into a new recording.
        A pass deletes the marker ERASE_MARKER_KEEP_US later (forget_erase_markers).
        Chunks received after it start a new recording, whose names none of the listed
        objects share, so the deletes can run after the lease is given back.
        """
        names, erased_at = self._under_lease(uid, self._erase_leased)
        failed = self.store.delete_each(names, progress)
        # A consumer may have written a sidecar of an erased WAV after the listing (it
        # read the WAV before the delete): look once more, by the erased WAVs' names.
        stems = tuple(name.removesuffix(".wav") + "." for name in names if name.endswith(".wav"))
        late_sidecars = [blob.name for blob in self.store.list_objects(user_prefixes(uid)[0])
                         if blob.name.startswith(stems) and blob.name not in names] if stems else []
        failed += self.store.delete_each(late_sidecars, progress)
        names += late_sidecars
        logs.info("user_erased", uid=uid, objects=len(names) - len(failed), failed=len(failed),
                  erased_before=format_time(erased_at))
        return Erased(uid, erased_at, [n for n in names if n not in failed], failed)

    def _erase_leased(self, lease: "Assembler.Leased") -> tuple[list[str], int]:
        uid = lease.state.uid
        names = [blob.name for prefix in user_prefixes(uid) for blob in self.store.list_objects(prefix)]
        # The erase instant in Cloud Storage's clock (our lease write), not this machine's:
        # ingest stamps received_at with Google's clocks too.
        erased_at = self.store.updated_us(state_name(uid))
        marker = UserState(uid=uid, watermark_us=max(lease.state.watermark_us, erased_at),
                           erased_before_us=erased_at, write_id=uuid.uuid4().hex)
        self._commit(lease, marker)
        return names, erased_at

    # --- tick entry --------------------------------------------------------------------


_assembler: Assembler | None = None
_assembler_lock = threading.Lock()


def get_assembler() -> Assembler:
    global _assembler
    if _assembler is None:
        with _assembler_lock:
            if _assembler is None:
                _assembler = Assembler(Config.from_env())
    return _assembler


def handle_tick(cloud_event=None) -> PassStats:
    """Entry point for a tick. Cloud Scheduler's message says which shard to drain:
    `{"shard": i, "shards": n}`; without one, shard 0."""
    return get_assembler().run_pass(shard_of_tick(cloud_event))


def shard_of_tick(cloud_event) -> int:
    try:
        data = base64.b64decode(cloud_event.data["message"]["data"])
        return int(json.loads(data).get("shard", 0))
    except (AttributeError, KeyError, TypeError, ValueError):
        return 0  # a plain tick (local ticker, manual trigger): the one shard
