"""What a pass did, counted: the fields of its `assembler_pass` log line."""

from __future__ import annotations

import dataclasses
import enum


class Skipped(enum.StrEnum):
    """Why a pass took no lease and collected nothing (the `skipped` field)."""

    # Another pass holds the shard.
    BUSY = "shard busy"
    # A pass died holding chunks: the shard waits for their redelivery (passes.py).
    DEAD_PASS = "waiting for a dead pass's chunks to be redelivered"
    # No sweep due (passes.py), and the probe found nothing waiting.
    IDLE = "idle"


@dataclasses.dataclass
class PassStats:
    shard: int = 0
    skipped: str = ""  # why the pass did nothing, if it did nothing: a Skipped
    pulled: int = 0
    chunks: int = 0
    assembled: int = 0
    duplicates: int = 0
    late: int = 0
    erased: int = 0
    held: int = 0
    # Why collecting ended (a collect.StopReason): "drained" (took what was waiting),
    # "max_pass_bytes" (the rest waits for the next tick: a shard gets more audio per tick
    # than one pass holds) or "time" (half of PASS_SECONDS spent). Either of the last two,
    # pass after pass, means the shard is falling behind. "" when nothing was collected.
    stopped: str = ""
    poison: int = 0
    retried: int = 0
    flushes: int = 0
    finalized: int = 0
    swept: bool = False  # listed the state objects and swept (due: passes.py)
    seconds: float = 0.0
    storage: dict = dataclasses.field(default_factory=dict)

    def add(self, other: PassStats) -> None:
        for field in ("chunks", "assembled", "duplicates", "late", "erased", "retried", "flushes", "finalized"):
            setattr(self, field, getattr(self, field) + getattr(other, field))
