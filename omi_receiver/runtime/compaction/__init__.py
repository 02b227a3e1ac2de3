"""Optional compaction of finished recordings (compact_recording; COMPACTION_FORMAT, off by
default): each finished-recording event turns its WAV into a verified FLAC (lossless) or
Opus (lossy, ~14x smaller) next to it, carrying the WAV's metadata, and then deletes the
WAV. README "Compaction"; infra/compaction.tf deploys it only when enabled.

  settings.py   COMPACTION_FORMAT: off | flac | opus
  codec.py      encode and verify, block by block (soundfile, loaded on first use)
  compactor.py  the storage steps, each safe to repeat, and the erase race

This module is the function's entry: an event runs `handle_event`.
"""

from __future__ import annotations

from .. import clients, logs
from ..lazy import Lazy
from .compactor import BadEvent, Compactor, Outcome, WavChanged, compacted_name, decode
from .settings import Format, Settings

__all__ = [
    "BadEvent",
    "Compactor",
    "Format",
    "Outcome",
    "Settings",
    "WavChanged",
    "compacted_name",
    "get_compactor",
    "handle_event",
    "set_compactor",
]

_compactor = Lazy(lambda: Compactor(clients.storage_client(), Settings.from_env()))
get_compactor = _compactor.get
set_compactor = _compactor.set


def handle_event(cloud_event) -> Outcome | None:
    """Entry point for a finished-recording event. Raises only what a redelivery can heal
    (storage errors the client's retries did not absorb, a WAV rewritten meanwhile)."""
    try:
        bucket, name = decode(cloud_event)
    except BadEvent as exc:
        logs.error("compaction_bad_event", error=str(exc))
        return None
    return get_compactor().compact(bucket, name)
