"""Per-user assembler state and the pure planning of a batch (no I/O here).

The state of one user lives in one small JSON object (`state/<uid>.json`), written only
with a generation precondition: it is the assembler's single commit point. `plan_batch`
decides, for a batch of chunks, which are duplicates, which are late, and which
recording each of the rest belongs to, following the audio-clock model of
docs/omi-sender.md ("Arrival timing: bursts, and the audio clock").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable

from ..contract import Chunk, duration_us, format_time

STATE_VERSION = 1
STATE_PREFIX = "state/"
RECORDINGS_PREFIX = "recordings/"
WORK_PREFIX = "work/"
# A pause in the audio longer than this (but under the session gap) is reported as a gap.
GAP_REPORT_US = 1_000_000


SHARD_LEASE_PREFIX = "leases/"


def shard_lease_name(shard: int) -> str:
    return f"{SHARD_LEASE_PREFIX}shard-{shard}.json"


@dataclasses.dataclass
class ShardLease:
    """Who runs the pass of a shard. Left unreleased by a pass that died, which tells the
    next pass that chunks it had pulled are still on their way back."""

    owner: str
    started_us: int
    released: bool = False
    # Every chunk received before this was committed by a pass that pulled its
    # subscription empty: recordings idle since well before it really are idle.
    drained_us: int = 0
    # The earliest time a sweep could find work: until then a pass that finds the lease
    # released only probes the subscription, and a pass that finds chunks lists no state
    # object (passes.py). 0: due now, as in a lease written before this field existed.
    sweep_due_us: int = 0
    # What it is the earliest of. The shard's open recordings by uid: when a sweep could
    # first finalize each (moved on by every flush of the user, so a user who keeps
    # streaming keeps no pass listing) ...
    open_due: dict[str, int] = dataclasses.field(default_factory=dict)
    # ... and the next daily sweep (erase markers), or earlier: the earliest due of open
    # recordings `open_due` has no room for.
    daily_due_us: int = 0
    # The pass that wrote this pulled chunks: the next pass takes the lease before it pulls
    # (no probe), so while a user streams every pull is covered by the dead-pass rule.
    pulled: bool = False

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> ShardLease:
        body = json.loads(blob)
        # Fields a newer release added are ignored, so a rollback still reads its leases.
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in body.items() if k in known})


def user_prefixes(uid: str) -> tuple[str, str]:
    """Where a user's objects are, besides the state object: recordings (and what
    consumers write next to them) and temporary audio."""
    return f"{RECORDINGS_PREFIX}{uid}/", f"{WORK_PREFIX}{uid}/"


def state_name(uid: str) -> str:
    return f"{STATE_PREFIX}{uid}.json"


def uid_of_state(name: str) -> str:
    return name[len(STATE_PREFIX) : -len(".json")]


def _stamp(micros: int) -> str:
    moment = dt.datetime.fromtimestamp(micros // 1_000_000, tz=dt.UTC)
    return moment.strftime("%Y%m%dT%H%M%S") + f".{(micros % 1_000_000) // 1000:03d}Z"


def recording_name(uid: str, start_us: int, suffix: str = "") -> str:
    """`recordings/<uid>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSS.mmmZ>[suffix].wav`: sorts by start."""
    day = dt.datetime.fromtimestamp(start_us // 1_000_000, tz=dt.UTC).strftime("%Y-%m-%d")
    return f"{RECORDINGS_PREFIX}{uid}/{day}/{_stamp(start_us)}{suffix}.wav"


@dataclasses.dataclass
class Recording:
    """An open recording: one WAV object plus the headerless data object it is built from."""

    id: str
    name: str
    sample_rate: int
    start_us: int
    first_received_us: int
    last_received_us: int
    expected_end_us: int  # the audio clock: where the next chunk's audio should begin
    bytes: int = 0
    chunks: int = 0
    gaps: int = 0
    gap_us: int = 0
    data: str | None = None  # current headerless PCM object under work/
    seq: int = 0  # flushes so far; names this recording's temporary objects

    @property
    def duration_us(self) -> int:
        return duration_us(self.bytes, self.sample_rate)

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    def work_prefix(self, uid: str) -> str:
        return f"{WORK_PREFIX}{uid}/{self.id}/"

    def metadata(self, uid: str, status: str) -> dict[str, str]:
        """Custom metadata of the WAV object (GCS metadata values are strings)."""
        return {
            "uid": uid,
            "sample_rate": str(self.sample_rate),
            "start": format_time(self.start_us),
            "end": format_time(self.end_us),
            "duration_seconds": f"{self.duration_us / 1e6:.3f}",
            "chunks": str(self.chunks),
            "gaps": str(self.gaps),
            "gap_seconds": f"{self.gap_us / 1e6:.3f}",
            "status": status,
        }

    def event(self, uid: str, bucket: str, late: bool = False) -> dict:
        """The JSON published to the recordings topic when the recording is final."""
        return {
            "uid": uid,
            "uri": f"gs://{bucket}/{self.name}",
            "bucket": bucket,
            "name": self.name,
            "sample_rate": self.sample_rate,
            "start": format_time(self.start_us),
            "end": format_time(self.end_us),
            "duration_seconds": round(self.duration_us / 1e6, 6),
            "bytes": self.bytes,
            "chunks": self.chunks,
            "gaps": self.gaps,
            "late": late,
        }


@dataclasses.dataclass
class UserLease:
    """Which assembler instance writes for the user until when (leases.py). Stored as the
    state's `lease` (JSON `{"owner", "until_us"}`)."""

    owner: str
    until_us: int


@dataclasses.dataclass
class UserState:
    uid: str
    watermark_us: int = 0  # received_at of the newest chunk committed
    recent: dict[str, int] = dataclasses.field(default_factory=dict)  # chunk_id -> received_at
    open: Recording | None = None
    lease: UserLease | None = None
    write_id: str = ""  # unique per write; recognises our own write after an ambiguous error
    # Set by an erase: chunks received before it are dropped, not assembled (they belong
    # to the erased audio and may still be on their way).
    erased_before_us: int = 0

    def to_json(self) -> bytes:
        body = {
            "version": STATE_VERSION,
            "uid": self.uid,
            "watermark_us": self.watermark_us,
            "recent": self.recent,
            "open": dataclasses.asdict(self.open) if self.open else None,
            "lease": dataclasses.asdict(self.lease) if self.lease else None,
            "write_id": self.write_id,
            "erased_before_us": self.erased_before_us,
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, blob: bytes) -> UserState:
        body = json.loads(blob)
        if body.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {body.get('version')!r}")
        return cls(
            uid=body["uid"],
            watermark_us=body["watermark_us"],
            recent=body["recent"],
            open=Recording(**body["open"]) if body["open"] else None,
            lease=UserLease(**body["lease"]) if body["lease"] else None,
            write_id=body.get("write_id", ""),
            erased_before_us=body.get("erased_before_us", 0),
        )

    def is_erase_marker(self) -> bool:
        """Nothing but an erase here: no recording open and no chunk since the erase."""
        return self.erased_before_us > 0 and self.open is None and not self.recent

    def list_metadata(self) -> dict[str, str]:
        """Metadata on the state object, so a listing finds idle open recordings and old
        erase markers unread."""
        if self.open is None:
            if self.is_erase_marker():
                return {"open": "0", "erased_before_us": str(self.erased_before_us)}
            return {"open": "0"}
        return {"open": "1", "last_received_us": str(self.open.last_received_us)}


@dataclasses.dataclass
class Segment:
    """Chunks appended to one recording in this flush; `closes` when the batch ends it."""

    recording: Recording
    chunks: list[Chunk]
    new: bool
    closes: bool = False


@dataclasses.dataclass
class Plan:
    segments: list[Segment]
    duplicates: list[Chunk]
    late: list[Chunk]
    erased: list[Chunk]  # received before the user's audio was erased: dropped
    state: UserState  # the state after the batch (lease untouched)


@dataclasses.dataclass(frozen=True)
class Rules:
    session_gap_us: int
    max_recording_us: int
    dedup_window_us: int


def order(chunks: Iterable[Chunk]) -> list[Chunk]:
    """received_at order; chunk_id breaks ties so every pass agrees."""
    return sorted(chunks, key=lambda c: (c.received_at_us, c.chunk_id))


def plan_batch(state: UserState, chunks: Iterable[Chunk], rules: Rules) -> Plan:
    """Assign a batch to recordings. Pure: `state` is not modified."""
    plan = Plan(segments=[], duplicates=[], late=[], erased=[], state=_copy(state))
    current: Segment | None = None  # the segment the previous chunk went to
    for chunk in order(chunks):
        if chunk.received_at_us < state.erased_before_us:
            plan.erased.append(chunk)
        elif chunk.chunk_id in plan.state.recent:
            plan.duplicates.append(chunk)
        else:
            plan.state.recent[chunk.chunk_id] = chunk.received_at_us
            if chunk.received_at_us < state.watermark_us:
                # Older than audio already committed: it cannot be put in its place any more.
                plan.late.append(chunk)
            else:
                current = _place(plan, current, chunk, rules)
    horizon = plan.state.watermark_us - rules.dedup_window_us
    plan.state.recent = {cid: t for cid, t in plan.state.recent.items() if t >= horizon}
    return plan


def _copy(state: UserState) -> UserState:
    return UserState(
        uid=state.uid,
        watermark_us=state.watermark_us,
        recent=dict(state.recent),
        open=dataclasses.replace(state.open) if state.open else None,
        lease=state.lease,
        write_id=state.write_id,
        erased_before_us=state.erased_before_us,
    )


def _place(plan: Plan, current: Segment | None, chunk: Chunk, rules: Rules) -> Segment:
    """Append the chunk to the open recording, or to a new one if it starts one (closing
    the open one); returns the segment it went to."""
    new_state = plan.state
    new_state.watermark_us = max(new_state.watermark_us, chunk.received_at_us)
    rec = new_state.open
    audio_start = chunk.received_at_us - chunk.duration_us
    if rec is not None and _starts_new_recording(rec, chunk, audio_start, rules):
        if current is not None and current.recording is rec:
            current.closes = True
        else:
            plan.segments.append(Segment(rec, [], new=False, closes=True))
        rec = new_state.open = None
        current = None
    if rec is None:
        rec = new_state.open = Recording(
            id=_stamp(audio_start),
            name=recording_name(new_state.uid, audio_start),
            sample_rate=chunk.sample_rate,
            start_us=audio_start,
            first_received_us=chunk.received_at_us,
            last_received_us=chunk.received_at_us,
            expected_end_us=audio_start,
        )
        current = Segment(rec, [], new=True)
        plan.segments.append(current)
    elif current is None:
        current = Segment(rec, [], new=False)
        plan.segments.append(current)

    pause = audio_start - rec.expected_end_us
    if pause > GAP_REPORT_US:
        rec.gaps += 1
        rec.gap_us += pause
    rec.expected_end_us = max(rec.expected_end_us, audio_start) + chunk.duration_us
    rec.last_received_us = chunk.received_at_us
    rec.bytes += len(chunk.data)
    rec.chunks += 1
    current.chunks.append(chunk)
    return current


def _starts_new_recording(rec: Recording, chunk: Chunk, audio_start: int, rules: Rules) -> bool:
    if chunk.sample_rate != rec.sample_rate:
        return True
    if rec.duration_us + chunk.duration_us > rules.max_recording_us:
        return True
    pause = audio_start - rec.expected_end_us
    # Wall-clock idleness too: the same split happens whether or not a tick has already
    # finalized the idle recording (e.g. an app interval longer than the session gap).
    idle = chunk.received_at_us - rec.last_received_us
    return pause > rules.session_gap_us or idle > rules.session_gap_us


def late_recording(uid: str, chunk: Chunk) -> Recording:
    """A chunk later than the window becomes a one-chunk recording of its own."""
    start = chunk.received_at_us - chunk.duration_us
    return Recording(
        id=_stamp(start),
        name=recording_name(uid, start, suffix=f"-late-{_safe(chunk.chunk_id)}"),
        sample_rate=chunk.sample_rate,
        start_us=start,
        first_received_us=chunk.received_at_us,
        last_received_us=chunk.received_at_us,
        expected_end_us=chunk.received_at_us,
        bytes=len(chunk.data),
        chunks=1,
    )


def _safe(chunk_id: str) -> str:
    return "".join(ch for ch in chunk_id if ch.isalnum() or ch in "-_")[:36] or "chunk"
