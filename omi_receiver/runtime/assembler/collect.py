"""Collecting a pass's chunks: rounds of pulls on the shard's subscription.

A round pulls until what was waiting when the pass started is taken, decoding each
message (poison is dead-lettered on the spot) and holding back what is still settling.
Everything is collected before anything is flushed, so a user is flushed once per round
(one round per pass unless MAX_PASS_BYTES ends it), however Pub/Sub spreads their chunks
over pull responses. A round that runs out of budget (MAX_PASS_BYTES, half of
PASS_SECONDS) keeps only what no waiting chunk can precede (see `_hold_beyond`). Why a
round stopped is a StopReason.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections import defaultdict

from google.api_core import exceptions

from .. import logs
from ..config import Config
from ..contract import Chunk, InvalidChunk
from .stats import PassStats
from .subscription import Subscription

# A chunk is held for the settle window on its first delivery only: every release counts
# as a delivery towards the dead-letter policy (max_delivery_attempts 10).
MAX_HOLD_ATTEMPTS = 2
# A chunk held back at MAX_PASS_BYTES (see _hold_beyond) is committed on this delivery
# rather than held again, well before the dead-letter policy would take it.
MAX_HOLD_BEYOND_ATTEMPTS = 4
# Pulls in a row that hold everything they bring: senders keep streaming, and what was
# waiting is taken.
FRESH_ONLY_PULLS = 2

# A round's chunks by uid, each with its ack id.
Batch = dict[str, list[tuple[str, Chunk]]]


class StopReason(enum.StrEnum):
    """Why a round of collecting stopped (the `stopped` field of the `assembler_pass` log)."""

    # A pull came back empty, or twice in a row with only chunks newer than the settle
    # cutoff, which the next pass takes.
    DRAINED = "drained"
    # MAX_PASS_BYTES reached and nothing held back: flush, then collect again.
    MORE = "more"
    # MAX_PASS_BYTES reached and chunks were held back: the rest waits for a tick.
    MAX_PASS_BYTES = "max_pass_bytes"
    # Half of PASS_SECONDS spent: the rest waits for a tick.
    TIME = "time"


@dataclasses.dataclass
class Rounds:
    """What the collecting rounds of one pass share."""

    subscription: Subscription
    cutoff_us: int  # chunks received after this are still settling
    started: float  # time.monotonic() at the start of the pass
    stats: PassStats
    held: list[str] = dataclasses.field(default_factory=list)  # ack ids to release when the pass ends
    # What the pass's probe pulled (passes.py): the first pull's messages start with it.
    probed: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _Taken:
    """What one round has taken so far."""

    frontier: int  # oldest chunk taken by the latest pull that took any
    by_uid: Batch = dataclasses.field(default_factory=lambda: defaultdict(list))
    bytes: int = 0
    attempts: dict[str, int] = dataclasses.field(default_factory=dict)  # delivery attempt, by ack id


class Collector:
    def __init__(self, config: Config, publisher):
        self.config = config
        self.publisher = publisher
        self.dead_letter_topic = config.topic_path(config.dead_letter_topic)

    def collect(self, rounds: Rounds) -> tuple[Batch, StopReason]:
        """One round: pull what was waiting when the pass started."""
        taken = _Taken(frontier=rounds.cutoff_us)
        fresh_only = 0  # consecutive pulls that held everything they got
        while True:
            if (
                taken.bytes >= self.config.max_pass_bytes
                or time.monotonic() - rounds.started >= self.config.pass_seconds / 2
            ):
                return self._stop_early(taken, rounds)
            received = self._next_pull(rounds)
            if not received:
                return taken.by_uid, StopReason.DRAINED
            rounds.stats.pulled += len(received)
            fresh_only = 0 if self._take(received, taken, rounds) else fresh_only + 1
            if fresh_only >= FRESH_ONLY_PULLS:
                return taken.by_uid, StopReason.DRAINED

    def _next_pull(self, rounds: Rounds) -> list:
        probed, rounds.probed = rounds.probed, []
        return probed + self.pull(rounds.subscription)

    def pull(self, subscription: Subscription) -> list:
        try:
            return subscription.pull(self.config.max_messages_per_pull)
        except (exceptions.DeadlineExceeded, exceptions.ServiceUnavailable):
            return []  # nothing waiting (the emulator's empty pull), or Pub/Sub away: a later pass takes it

    def _take(self, received: list, taken: _Taken, rounds: Rounds) -> int:
        """Take one pull's chunks into `taken`, holding back those still settling; returns
        how many were taken."""
        count = 0
        oldest = None
        for item in received:
            chunk = self._decode_or_dead_letter(rounds, item)
            if chunk is None:
                continue
            if chunk.received_at_us > rounds.cutoff_us and item.delivery_attempt < MAX_HOLD_ATTEMPTS:
                # Still settling: a straggler received just before it may still be on its
                # way. Released at the end for the next pass.
                rounds.held.append(item.ack_id)
                rounds.stats.held += 1
                continue
            taken.by_uid[chunk.uid].append((item.ack_id, chunk))
            taken.attempts[item.ack_id] = item.delivery_attempt
            taken.bytes += len(chunk.data)
            count += 1
            oldest = chunk.received_at_us if oldest is None else min(oldest, chunk.received_at_us)
        if oldest is not None:
            taken.frontier = oldest
        return count

    def _stop_early(self, taken: _Taken, rounds: Rounds) -> tuple[Batch, StopReason]:
        """The budget ran out before the subscription was drained."""
        before = len(rounds.held)
        capped = taken.bytes >= self.config.max_pass_bytes
        kept = _hold_beyond(taken, rounds, capped)
        if not capped:
            return kept, StopReason.TIME
        # Another round may follow only if nothing was held back: it could bring a held
        # user's newer chunks while the held ones stay leased to this pass.
        return kept, StopReason.MORE if len(rounds.held) == before else StopReason.MAX_PASS_BYTES

    def _decode_or_dead_letter(self, rounds: Rounds, item) -> Chunk | None:
        """The message's chunk; None for poison, which goes to the dead-letter topic."""
        message = item.message
        try:
            return Chunk.from_message(message.data, dict(message.attributes))
        except InvalidChunk as exc:
            rounds.stats.poison += 1
            attributes = dict(message.attributes)
            logs.error(
                "poison_message",
                error=exc.code,
                detail=exc.detail,
                message_id=message.message_id,
                uid=attributes.get("uid"),
                chunk_id=attributes.get("chunk_id"),
                bytes=len(message.data),
            )
            try:
                attributes.update(error=exc.code, original_message_id=message.message_id)
                self.publisher.publish(self.dead_letter_topic, message.data, **attributes).result(timeout=30)
            except Exception as publish_error:  # noqa: BLE001 - leave it to the subscription's policy
                logs.error("dead_letter_publish_failed", error=str(publish_error), message_id=message.message_id)
                rounds.subscription.release([item.ack_id])
                return None
            rounds.subscription.ack([item.ack_id])
            return None


def _hold_beyond(taken: _Taken, rounds: Rounds, capped: bool) -> Batch:
    """Collection stopped before the subscription was drained: older chunks of a user may
    still wait there (Pub/Sub without ordering hands out chunks roughly, not exactly,
    oldest first). Commit only what is older than the latest pull's oldest chunk, and hold
    the rest with the chunks still waiting, for the next round.

    Two exceptions keep a backlog moving, because every hold is a delivery counted by the
    dead-letter policy: a chunk delivered MAX_HOLD_BEYOND_ATTEMPTS times is committed now,
    and when MAX_PASS_BYTES (`capped`) stopped a round whose latest pull held its oldest
    chunk (as after redeliveries), so that the rule would commit nothing, everything taken
    is committed, as after a drain: the next pass would only meet the same cap. A chunk
    older than audio already committed then gets a late recording of its own: kept, never
    stalled into the dead-letter topic. (A pass stopped by time holds it all: the next
    pass, with its own budget, takes it.)"""
    kept, beyond = {}, []
    for uid, items in taken.by_uid.items():
        now_items = []
        for ack_id, chunk in items:
            if chunk.received_at_us < taken.frontier or taken.attempts.get(ack_id, 0) >= MAX_HOLD_BEYOND_ATTEMPTS:
                now_items.append((ack_id, chunk))
            else:
                beyond.append(ack_id)
        if now_items:
            kept[uid] = now_items
    if not kept and capped:
        return dict(taken.by_uid)
    rounds.held.extend(beyond)
    rounds.stats.held += len(beyond)
    return kept
