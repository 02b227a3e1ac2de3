"""Splits: where each device's recordings start, against the splitting rules of
`recording.plan_batch` (a sample-rate change, MAX_RECORDING_SECONDS, a pause or idle time
over the session gap), and the per-kind summary of splits in soak.json."""

from __future__ import annotations

import collections
import dataclasses

from bench.soak.settings import US, Settings
from omi_receiver.runtime.contract import duration_us

# A pause or idle time within this of the session gap is ambiguous: either outcome is accepted.
MARGIN_US = 5 * US


@dataclasses.dataclass
class _Open:
    """The recording being walked: its rate and size so far, the end of its audio clock
    (docs/omi-sender.md's model) and when its last chunk was acknowledged."""

    rate: int
    size: int
    expected_end: int
    last: int


def no_splits() -> dict:
    """check_splits' answer for a device whose splits are not checked."""
    return {"missing_splits": [], "unexpected_splits": [], "ambiguous": 0, "reasons": {}}


def check_splits(recs: list, expected: list, s: Settings, kills: list[dict]) -> dict:
    """Compare where recordings start (`recs`, verify.RecordingFile) with the rules, walking
    the acknowledged chunks (`expected`, verify.Expected) in order.

    The ledger's acked_at stands in for received_at (it is taken just after ingest
    answered, so later by the publish time).
    """
    starts = {rec.chunks[0] for rec in recs if rec.chunks}
    missing, unexpected, ambiguous = [], [], 0
    reasons = collections.Counter()
    current: _Open | None = None
    for j, e in enumerate(expected):
        d = duration_us(len(e.data), e.rate)
        audio_start = e.acked_us - d
        required, allowed, reason = _verdict(e, d, current, s) if current else (True, True, None)
        ambiguous += allowed and not required
        is_start = j in starts
        if is_start and reason:
            reasons[reason] += 1
        if required and not is_start:
            missing.append({"chunk": j, "acked_at_us": e.acked_us})
        if is_start and not allowed:
            unexpected.append(
                {
                    "chunk": j,
                    "idle_s": round((e.acked_us - current.last) / US, 1),
                    "nearest_kill_s": _nearest_kill_s(kills, e.acked_us),
                }
            )
        if is_start:
            current = _Open(e.rate, 0, audio_start, e.acked_us)
        current.size += len(e.data)
        current.expected_end = max(current.expected_end, audio_start) + d
        current.last = e.acked_us
    return {
        "missing_splits": missing,
        "unexpected_splits": unexpected,
        "ambiguous": ambiguous,
        "reasons": dict(reasons),
    }


def _verdict(e, d: int, current: _Open, s: Settings) -> tuple[bool, bool, str]:
    """(a split is required before chunk `e`, a split is allowed there, its reason if any)."""
    gap = s.session_gap * US
    pause = (e.acked_us - d) - current.expected_end
    idle = e.acked_us - current.last
    too_long = duration_us(current.size, current.rate) + d > s.max_recording * US
    exact = e.rate != current.rate or too_long
    required = exact or pause > gap + MARGIN_US or idle > gap + MARGIN_US
    allowed = required or pause > gap - MARGIN_US or idle > gap - MARGIN_US
    return required, allowed, "rate" if e.rate != current.rate else "max" if too_long else "gap"


def _nearest_kill_s(kills: list[dict], at_us: int) -> float | None:
    near = min((abs(k["wall_us"] - at_us) / US for k in kills if "wall_us" in k), default=None)
    return round(near, 1) if near is not None else None


def split_summary(devices: list[dict]) -> dict:
    """Recordings and splits per kind of device. Splits are only checked on devices whose
    audio is byte-identical to their acknowledged chunks (the others already failed)."""
    checked = [d for d in devices if d["identical"]]
    pausing = [d for d in checked if d["pauses"] and not d["switches_rate"]]
    plain = [d for d in checked if not d["pauses"] and not d["switches_rate"]]

    def histogram(values):
        return sorted(collections.Counter(values).items())

    return {
        "split_checked_devices": len(checked),
        "per_plain_device": histogram(d["recordings"] for d in plain),
        "per_pausing_device": histogram(d["recordings"] for d in pausing),
        "splits_by_reason": dict(sum((collections.Counter(d["splits"]) for d in checked), collections.Counter())),
        "gap_splits_per_plain_device": histogram(d["splits"].get("gap", 0) for d in plain),
        "gap_splits_per_pausing_device": histogram(d["splits"].get("gap", 0) for d in pausing),
    }
