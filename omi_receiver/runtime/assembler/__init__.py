"""The assembler (assemble_recordings): one pass per tick turns the chunks waiting on a
shard's subscription into WAV recordings in Cloud Storage. docs/design.md has the
exactly-once argument.

  assembler.py     the Assembler: the parts below wired together
  passes.py        one pass: the shard lease, the idle probe, rounds of collect -> flush -> ack, sweeps
  collect.py       a round's pulls: decode or dead-letter, settle holds, hold-beyond; StopReason
  subscription.py  pull, ack, release (shared with the dead-letter commands)
  flush.py         one user's flush: plan, audio writes, commit, clean-up
  leases.py        the per-user lease: acquire, commit under it, release
  events.py        the finished-recording event
  sweeps.py        idle recordings finalized, old erase markers forgotten
  recording.py     per-user state and the pure planning of a batch
  store.py         Cloud Storage requests, generation-checked
  stats.py         a pass's counters (its `assembler_pass` log)

This module is the function's entry: a tick runs `handle_tick`.
"""

from __future__ import annotations

import base64
import json

from ..config import Config
from ..lazy import Lazy
from .assembler import Assembler
from .collect import StopReason
from .leases import LeaseBusy
from .stats import PassStats
from .sweeps import ERASE_MARKER_KEEP_US

__all__ = [
    "ERASE_MARKER_KEEP_US",
    "Assembler",
    "LeaseBusy",
    "PassStats",
    "StopReason",
    "get_assembler",
    "handle_tick",
    "set_assembler",
    "shard_of_tick",
]

_assembler = Lazy(lambda: Assembler(Config.from_env()))
get_assembler = _assembler.get
set_assembler = _assembler.set


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
