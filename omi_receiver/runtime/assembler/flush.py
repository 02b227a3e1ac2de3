"""One user's flush, under their lease: plan the batch, write the audio, announce finished
recordings, commit the state, clean up (docs/design.md, "One flush, step by step").

    upload part -> compose data + part -> upload header -> compose header + data into the
    WAV -> publish finished recordings -> commit state (generation precondition)
    -> delete temporaries

The commit is the only write that makes audio count; everything before it writes names
nobody else uses, or the WAV, whose content follows from the data being committed. The
ack comes after (passes.py). Finalizing an idle recording (sweeps.py) is the same writes
without new audio.
"""

from __future__ import annotations

import dataclasses

from .. import logs, wav
from ..contract import Chunk
from .events import Events
from .leases import Held, UserLeases
from .recording import Plan, Recording, Rules, Segment, late_recording, plan_batch, user_prefixes
from .stats import PassStats
from .store import WAV_CONTENT_TYPE, Store

# How many chunk ids a log line names at most.
LOGGED_IDS = 20


@dataclasses.dataclass
class Flusher:
    store: Store
    leases: UserLeases
    events: Events
    rules: Rules

    def flush(self, held: Held, chunks: list[Chunk]) -> PassStats:
        """Append a batch to the user's recordings and commit it."""
        uid = held.state.uid
        plan = plan_batch(held.state, chunks, self.rules)
        stats = PassStats(
            chunks=len(chunks), duplicates=len(plan.duplicates), late=len(plan.late), erased=len(plan.erased)
        )
        garbage, finished = self._write_segments(held, plan.segments, stats)
        for chunk in plan.late:
            self._write_late(uid, chunk)
        for rec in finished:
            self.events.finished(uid, rec)

        plan.state.lease = None
        self.leases.commit(held, plan.state)

        stats.assembled = _log_flush(uid, plan)
        for rec in finished:
            self.store.delete_prefix(rec.work_prefix(uid))
            stats.finalized += 1
        self.store.delete_quietly(garbage)
        return stats

    def finalize(self, held: Held) -> None:
        """Make the user's open recording final and commit the state with none open."""
        state = held.state
        rec = state.open
        # Rebuild the WAV from committed data: a pass killed before its commit may have
        # left a WAV holding chunks that will be redelivered.
        garbage = self.materialize(held, rec, final=True)
        self.events.finished(state.uid, rec)
        state.open = None
        state.lease = None
        self.leases.commit(held, state)
        # No recording of the user is open now, so all of work/<uid>/ goes: this one's
        # objects, and any an earlier pass left behind (killed between a finalization's
        # commit and this clean-up, or stalled past its lease into a finished recording).
        self.store.delete_prefix(user_prefixes(state.uid)[1])
        self.store.delete_quietly(garbage)

    def _write_segments(
        self, held: Held, segments: list[Segment], stats: PassStats
    ) -> tuple[list[str], list[Recording]]:
        """Write each recording the batch touches; returns (objects to delete after the
        commit, recordings the batch finished)."""
        garbage: list[str] = []
        finished: list[Recording] = []
        for segment in segments:
            rec = segment.recording
            if segment.chunks:
                garbage += self._append(held, rec, segment.chunks, final=segment.closes)
                stats.flushes += 1
            elif segment.closes:
                garbage += self.materialize(held, rec, final=True)
            if segment.closes:
                finished.append(rec)
        return garbage, finished

    def _append(self, held: Held, rec: Recording, chunks: list[Chunk], final: bool) -> list[str]:
        """Add chunks to the recording's data object and rewrite its WAV; returns garbage."""
        prefix = rec.work_prefix(held.state.uid)
        rec.seq += 1
        part = f"{prefix}part-{rec.seq:06d}-{held.tag}"
        self.store.upload(part, b"".join(c.data for c in chunks))
        if rec.data is None:
            rec.data = part  # a new recording's first part is its data
            garbage = []
        else:
            data = f"{prefix}data-{rec.seq:06d}-{held.tag}"
            self.store.compose(data, [rec.data, part])
            garbage = [part, rec.data]
            rec.data = data
        return garbage + self.materialize(held, rec, final)

    def materialize(self, held: Held, rec: Recording, final: bool) -> list[str]:
        """WAV = header + data: a server-side compose, never a download of the recording."""
        uid = held.state.uid
        status = "final" if final else "open"
        header = f"{rec.work_prefix(uid)}header-{rec.seq:06d}-{held.tag}-{status}"
        self.store.upload_header(header, rec.sample_rate, rec.bytes)
        self.leases.check(held)
        self.store.compose(
            rec.name, [header, rec.data], content_type=WAV_CONTENT_TYPE, metadata=rec.metadata(uid, status)
        )
        return [header]

    def _write_late(self, uid: str, chunk: Chunk) -> None:
        """A chunk later than the window: its own one-chunk recording, never dropped."""
        rec = late_recording(uid, chunk)
        meta = rec.metadata(uid, "final")
        meta.update(late="true", chunk_id=chunk.chunk_id)
        # Deterministic name and content, written only if absent: a retry cannot double it.
        self.store.upload(
            rec.name, wav.header(rec.sample_rate, rec.bytes) + chunk.data, content_type=WAV_CONTENT_TYPE, metadata=meta
        )
        self.events.finished(uid, rec, late=True)


def _log_flush(uid: str, plan: Plan) -> int:
    """Log what the committed flush did; returns how many chunks it assembled."""
    assembled = [c for s in plan.segments for c in s.chunks]
    count = len(assembled) + len(plan.late)
    if count:
        logs.info(
            "chunks_assembled",
            uid=uid,
            chunks=count,
            bytes=sum(len(c.data) for c in assembled) + sum(len(c.data) for c in plan.late),
            recording=plan.state.open.name if plan.state.open else None,
        )
    if plan.duplicates:
        logs.info(
            "duplicates_dropped",
            uid=uid,
            duplicates=len(plan.duplicates),
            chunk_ids=[c.chunk_id for c in plan.duplicates[:LOGGED_IDS]],
        )
    if plan.late:
        logs.warning(
            "late_chunks", uid=uid, chunks=len(plan.late), chunk_ids=[c.chunk_id for c in plan.late[:LOGGED_IDS]]
        )
    if plan.erased:
        logs.info("erased_chunks_dropped", uid=uid, chunks=len(plan.erased))
    return count
