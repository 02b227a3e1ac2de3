"""One pass of a shard, run per tick: take the shard's lease, collect and flush in rounds,
ack, sweep, release the lease.

    take shard lease -> [collect a round -> flush each user (in parallel) -> ack or
    release their chunks]* -> release held chunks -> sweeps -> release shard lease

The shard lease keeps one pass per shard at a time, and keeps a shard waiting after a pass
died holding chunks (docs/design.md, "A pass that died holding chunks"). It also records
the start of the last clean drain, against which the sweeps judge idleness.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
import uuid
from collections.abc import Callable
from typing import Any

from .. import logs
from ..config import Config
from ..contract import Chunk
from .collect import Batch, Collector, Rounds, StopReason
from .leases import LeaseBusy
from .recording import ShardLease
from .stats import PassStats
from .store import PreconditionFailed, Store
from .subscription import Subscription
from .sweeps import Sweeps

# After a pass died: wait this long beyond its last possible pull plus the ack deadline.
SHARD_MARGIN_S = 10

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

    def run(self, shard: int) -> PassStats:
        """Collect what waits on the shard's subscription, flush each user once, ack."""
        started = time.monotonic()
        stats = PassStats(shard=shard)
        ops_before = dataclasses.asdict(self.store.ops)
        taken = self._take_shard(shard, stats)
        if taken is not None:
            lease, generation = taken
            drained = self._drain(shard, stats, started)
            # Idle is judged against the previous clean drain, never this pass's own: an
            # empty pull can be spurious (a cold channel), and after a dead pass the
            # chunks it held are not committed yet.
            stats.finalized += self.sweeps.after_pass(shard, lease.drained_us)
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
            wait_us = (
                max(
                    self.config.lease_seconds,
                    self.config.pass_seconds + self.config.ack_deadline_seconds + SHARD_MARGIN_S,
                )
                * 1_000_000
            )
            if now < lease.started_us + wait_us:
                stats.skipped = (
                    "shard busy"
                    if now < lease.started_us + self.config.lease_seconds * 1_000_000
                    else "waiting for a dead pass's chunks to be redelivered"
                )
                return None
            logs.warning(
                "dead_pass_recovered",
                shard=shard,
                owner=lease.owner,
                started_seconds_ago=round((now - lease.started_us) / 1e6, 1),
            )
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
        """Collect and flush in rounds; returns whether the pass took everything that was
        waiting when it started."""
        path = self.config.subscription_path(self.config.shard_subscription(shard))
        subscription = Subscription(self.subscriber, path)
        rounds = Rounds(subscription, self.clock() - int(self.config.settle_seconds * 1_000_000), started, stats)
        with concurrent.futures.ThreadPoolExecutor(self.config.flush_workers) as pool:
            stopped = StopReason.MORE
            while stopped is StopReason.MORE and time.monotonic() - started < self.config.pass_seconds:
                batch, stopped = self.collector.collect(rounds)
                self._flush_round(pool, subscription, batch, stats)
        stats.stopped = StopReason.TIME if stopped is StopReason.MORE else stopped  # PASS_SECONDS ended the rounds
        subscription.release(rounds.held)
        return stopped is StopReason.DRAINED and not stats.retried

    def _flush_round(
        self, pool: concurrent.futures.Executor, subscription: Subscription, batch: Batch, stats: PassStats
    ) -> None:
        futures = [pool.submit(self._flush_and_ack, subscription, uid, items) for uid, items in batch.items()]
        for future in futures:
            stats.add(future.result())

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
