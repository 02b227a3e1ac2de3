"""One pass of a shard, run per tick: take the shard's lease, collect and flush in rounds,
ack, sweep, release the lease.

    read shard lease -> [probe: nothing waiting -> end] -> take shard lease ->
    [collect a round -> flush each user (in parallel) -> ack or release their chunks]*
    -> release held chunks -> [sweeps, if due] -> release shard lease

The shard lease keeps one pass per shard at a time, and keeps a shard waiting after a pass
died holding chunks (docs/design.md, "A pass that died holding chunks"). It also records
the start of the last clean drain, against which the sweeps judge idleness, and when the
sweeps are next due: until then a pass first probes the subscription (one short pull of
one message) and, finding nothing, ends having written and listed nothing; finding chunks,
it flushes them and lists nothing either (docs/design.md, "An idle pass"). The sweeps wait
for the time the first open recording could be finalized, which each flush of its user
moves on, or for the daily sweep of erase markers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions

from .. import logs
from ..config import Config
from ..contract import Chunk
from .collect import Batch, Collector, Rounds, StopReason
from .leases import LeaseBusy
from .recording import ShardLease
from .stats import PassStats, Skipped
from .store import PreconditionFailed, Store
from .subscription import Subscription
from .sweeps import SWEEP_INTERVAL_US, Sweeps, Swept

# After a pass died: wait this long beyond its last possible pull plus the ack deadline.
SHARD_MARGIN_S = 10
# How long the probe of an idle shard waits for a message: a waiting one comes in tens of
# ms (0.03 s on the emulator), and an idle pass bills under a second of instance time. An
# instance's first probe waits PULL_TIMEOUT_SECONDS: its channel may still be connecting,
# and a probe that always timed out on it would leave chunks waiting for the daily sweep.
PROBE_TIMEOUT_SECONDS = 0.5
# How many open recordings a shard lease names with their due time (ShardLease.open_due,
# ~60 bytes each); beyond, the earliest due of the rest is kept in `daily_due_us`.
OPEN_DUE_MAX = 100

FlushUser = Callable[[str, list[Chunk]], PassStats]


@dataclasses.dataclass
class Passes:
    config: Config
    clock: Callable[[], int]
    store: Store
    subscriber: Any
    collector: Collector
    flush_user: FlushUser
    sweeps: Sweeps
    _probed_before: bool = dataclasses.field(default=False, init=False)  # this instance's channel is up

    def run(self, shard: int) -> PassStats:
        """Collect what waits on the shard's subscription, flush each user once, ack."""
        started = time.monotonic()
        stats = PassStats(shard=shard)
        ops_before = dataclasses.asdict(self.store.ops)
        path = self.config.subscription_path(self.config.shard_subscription(shard))
        subscription = Subscription(self.subscriber, path)
        lease, generation = self.store.read_shard_lease(shard)
        quiet = self._quiet(lease)
        probed = self._probe(subscription) if quiet else []
        if quiet and not probed:
            stats.skipped = Skipped.IDLE
        else:
            taken = self._take_shard(shard, lease, generation, stats)
            if taken is None:
                subscription.release([item.ack_id for item in probed])
            else:
                self._full_pass(shard, subscription, *taken, probed, stats, started)
        stats.seconds = round(time.monotonic() - started, 3)
        stats.storage = {k: v - ops_before[k] for k, v in dataclasses.asdict(self.store.ops).items()}
        logs.info("assembler_pass", **dataclasses.asdict(stats))
        return stats

    def _quiet(self, lease: ShardLease | None) -> bool:
        """The last pass ended cleanly, pulled nothing, and no sweep is due: only a probe is
        needed to know whether there is work."""
        return lease is not None and lease.released and not lease.pulled and self.clock() < lease.sweep_due_us

    def _probe(self, subscription: Subscription) -> list:
        """At most one waiting message, pulled without taking the shard lease.

        An instance that dies holding it leaves no unreleased lease: the message comes
        back after the ack deadline, behind any newer chunk of its user committed meanwhile,
        and so becomes a late recording of its own (docs/design.md, "An idle pass")."""
        wait = PROBE_TIMEOUT_SECONDS if self._probed_before else None
        try:
            return subscription.pull(1, wait)
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            return []  # as Collector.pull: nothing waiting, or Pub/Sub away
        finally:
            self._probed_before = True

    def _full_pass(
        self,
        shard: int,
        subscription: Subscription,
        lease: ShardLease,
        generation: int,
        probed: list,
        stats: PassStats,
        started: float,
    ) -> None:
        committed: dict[str, int] = {}
        drained = self._drain(subscription, probed, stats, started, committed)
        swept = None
        if self.clock() >= lease.sweep_due_us:
            # Idle is judged against the previous clean drain, never this pass's own: an
            # empty pull can be spurious (a cold channel), and after a dead pass the
            # chunks it held are not committed yet.
            swept = self.sweeps.after_pass(shard, lease.drained_us)
            stats.swept = True
            stats.finalized += swept.finalized
        if drained:
            # Everything received before this is committed: older than the settle
            # cutoff, and long enough ago for its publish to have finished.
            lease = dataclasses.replace(lease, drained_us=lease.started_us - self._drain_margin_us())
        lease = dataclasses.replace(lease, pulled=stats.pulled > 0)
        self._release_shard(shard, self._next_sweep(lease, swept, committed), generation)

    def _drain_margin_us(self) -> int:
        return int(max(self.config.settle_seconds, self.config.publish_timeout_seconds + 2) * 1_000_000)

    def _next_sweep(self, lease: ShardLease, swept: Swept | None, committed: dict[str, int]) -> ShardLease:
        """When the next pass must sweep: the earliest time a sweep could finalize a recording.

        A recording whose last chunk came at L is finalized by the first sweep whose
        previous clean drain is later than L + SESSION_GAP_SECONDS; a pass's drain is its
        start less the drain margin. So the first pass at or after L + gap + margin (+1 s)
        moves the drain past it, and the pass after that finalizes: the due time stays in
        the past until then. `committed`: uid -> the newest chunk this pass committed for
        them (never later than their open recording's last chunk)."""
        idle_us = self.config.session_gap_seconds * 1_000_000 + self._drain_margin_us() + 1_000_000
        if swept is None:
            daily, open_due = lease.daily_due_us, dict(lease.open_due)
        else:
            daily = self.clock() + SWEEP_INTERVAL_US
            open_due = {uid: last + idle_us for uid, last in swept.open.items()}
        for uid, newest in committed.items():
            open_due[uid] = max(open_due.get(uid, 0), newest + idle_us)
        if len(open_due) > OPEN_DUE_MAX:
            by_due = sorted(open_due.items(), key=lambda item: item[1])
            daily = min(daily, by_due[OPEN_DUE_MAX][1])
            open_due = dict(by_due[:OPEN_DUE_MAX])
        due = min([daily, *open_due.values()])
        return dataclasses.replace(lease, sweep_due_us=due, open_due=open_due, daily_due_us=daily)

    def _take_shard(
        self, shard: int, lease: ShardLease | None, generation: int, stats: PassStats
    ) -> tuple[ShardLease, int] | None:
        """One pass per shard at a time, and none right after a pass died.

        A pass that died (killed, timed out, crashed) leaves its shard lease unreleased and
        the chunks it had pulled unacked: Pub/Sub hands them out again only after the ack
        deadline. Committing the same users' newer chunks before that would put them ahead
        of the older ones, so the shard waits until every chunk that pass could have
        pulled is back in the subscription. The pass is skipped (nothing pulled) until then.
        """
        now = self.clock()
        if lease is not None and not lease.released:
            wait_us = (
                max(
                    self.config.lease_seconds,
                    self.config.pass_seconds + self.config.ack_deadline_seconds + SHARD_MARGIN_S,
                )
                * 1_000_000
            )
            if now < lease.started_us + wait_us:
                busy = now < lease.started_us + self.config.lease_seconds * 1_000_000
                stats.skipped = Skipped.BUSY if busy else Skipped.DEAD_PASS
                return None
            logs.warning(
                "dead_pass_recovered",
                shard=shard,
                owner=lease.owner,
                started_seconds_ago=round((now - lease.started_us) / 1e6, 1),
            )
        # Carry the last clean drain over; a dead pass's lease carries the one before it.
        mine = ShardLease(owner=uuid.uuid4().hex, started_us=now, drained_us=lease.drained_us if lease else 0)
        if lease is not None and lease.released:
            # And when the sweeps are due. Not a dead pass's: it may have committed
            # recordings it never noted, so the pass after it sweeps.
            mine = dataclasses.replace(
                mine, sweep_due_us=lease.sweep_due_us, open_due=lease.open_due, daily_due_us=lease.daily_due_us
            )
        try:
            return mine, self.store.write_shard_lease(shard, mine, generation)
        except PreconditionFailed:
            stats.skipped = Skipped.BUSY
            return None

    def _release_shard(self, shard: int, lease: ShardLease, generation: int) -> None:
        # Only after a clean pass: if anything above raised, chunks may still be leased to
        # this pass, and the next pass must wait for them as for a dead pass's.
        try:
            self.store.write_shard_lease(shard, dataclasses.replace(lease, released=True), generation)
        except PreconditionFailed:
            logs.warning("shard_lease_lost", shard=shard)  # this pass overran; another took over

    def _drain(
        self, subscription: Subscription, probed: list, stats: PassStats, started: float, committed: dict[str, int]
    ) -> bool:
        """Collect and flush in rounds, starting with what the probe pulled; returns whether
        the pass took everything that was waiting when it started. Notes in `committed`
        the newest chunk committed per user."""
        cutoff = self.clock() - int(self.config.settle_seconds * 1_000_000)
        rounds = Rounds(subscription, cutoff, started, stats, probed=list(probed))
        with concurrent.futures.ThreadPoolExecutor(self.config.flush_workers) as pool:
            stopped = StopReason.MORE
            while stopped is StopReason.MORE and time.monotonic() - started < self.config.pass_seconds:
                batch, stopped = self.collector.collect(rounds)
                self._flush_round(pool, subscription, batch, stats, committed)
        stats.stopped = StopReason.TIME if stopped is StopReason.MORE else stopped  # PASS_SECONDS ended the rounds
        subscription.release(rounds.held)
        return stopped is StopReason.DRAINED and not stats.retried

    def _flush_round(
        self,
        pool: concurrent.futures.Executor,
        subscription: Subscription,
        batch: Batch,
        stats: PassStats,
        committed: dict[str, int],
    ) -> None:
        futures = {uid: pool.submit(self._flush_and_ack, subscription, uid, items) for uid, items in batch.items()}
        for uid, future in futures.items():
            result = future.result()
            stats.add(result)
            if not result.retried:  # committed, not handed back
                newest = max(chunk.received_at_us for _, chunk in batch[uid])
                committed[uid] = max(committed.get(uid, 0), newest)

    def _flush_and_ack(self, subscription: Subscription, uid: str, items: list[tuple[str, Chunk]]) -> PassStats:
        ack_ids = [ack_id for ack_id, _ in items]
        try:
            stats = self.flush_user(uid, [chunk for _, chunk in items])
        except (LeaseBusy, PreconditionFailed) as exc:
            logs.warning("flush_deferred", uid=uid, reason=type(exc).__name__, chunks=len(items))
            subscription.release(ack_ids)
            return PassStats(chunks=len(items), retried=len(items))
        except Exception as exc:  # noqa: BLE001 - one user's failure must not stop the others
            logs.error("flush_failed", uid=uid, error=repr(exc), chunks=len(items))
            subscription.release(ack_ids)
            return PassStats(chunks=len(items), retried=len(items))
        subscription.ack(ack_ids)
        return stats
