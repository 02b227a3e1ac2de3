"""The sweeps a pass makes after flushing, over its shard's users as one listing of the
state objects finds them (their custom metadata; no state is read to decide):

  finalize_idle          open recordings with no chunk for SESSION_GAP_SECONDS become final
  forget_erase_markers   erase markers older than ERASE_MARKER_KEEP_US are deleted

Each user's work runs under their lease; a user a pass holds waits for the next tick.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .. import logs
from ..config import Config
from ..contract import format_time, shard_of
from .flush import Flusher
from .leases import Held, LeaseBusy, UserLeases
from .recording import Rules, uid_of_state
from .store import PreconditionFailed, Store

# An erase marker (UserState.erased_before_us) drops chunks from before the erase that are
# still on their way. None can be after 7 days in a chunk subscription, 7 in the hold
# subscription and, after a `dlq replay`, 7 more in a chunk subscription (infra/pubsub.tf);
# a day more, then the state object, which still names the uid, is deleted.
ERASE_MARKER_KEEP_US = 22 * 86_400 * 1_000_000

# With no recording open, the listing is needed only to forget erase markers: once a day
# is enough (ERASE_MARKER_KEEP_US is a lower bound; a marker kept a day longer is harmless).
SWEEP_INTERVAL_US = 86_400 * 1_000_000

# (state object name, its custom metadata), as Store.list_states yields them.
StateListing = list[tuple[str, dict[str, str]]]


@dataclasses.dataclass(frozen=True)
class Swept:
    """What the sweeps after a pass found."""

    finalized: int  # recordings finalized
    # The shard's recordings still open after the sweep: uid -> last_received_us.
    open: dict[str, int]


@dataclasses.dataclass
class Sweeps:
    config: Config
    clock: Callable[[], int]
    store: Store
    leases: UserLeases
    flusher: Flusher
    rules: Rules

    def after_pass(self, shard: int, drained_us: int) -> Swept:
        """Both sweeps from one listing."""
        states = list(self.store.list_states())
        finalized = self._finalize_idle(shard, drained_us, states)
        self.forget_erase_markers(shard, states)
        still_open = {
            uid_of_state(name): int(metadata.get("last_received_us", "0"))
            for name, metadata in states
            if metadata.get("open") == "1"
            and shard_of(uid_of_state(name), self.config.assembler_shards) == shard
            and uid_of_state(name) not in finalized
        }
        return Swept(finalized=len(finalized), open=still_open)

    def finalize_idle(self, shard: int = 0, drained_us: int | None = None, states: StateListing | None = None) -> int:
        """Finalize the shard's open recordings with no chunk for SESSION_GAP_SECONDS before
        `drained_us` (default: now), when all chunks received before it were committed.

        Only the shard's own users: their pass knows no chunk of theirs is still with a
        dead pass (see passes.py), so an idle recording really is idle.
        """
        return len(self._finalize_idle(shard, drained_us, states))

    def _finalize_idle(self, shard: int, drained_us: int | None, states: StateListing | None) -> set[str]:
        """finalize_idle; returns the uids finalized."""
        if drained_us == 0:
            return set()  # no clean drain known yet
        horizon = (self.clock() if drained_us is None else drained_us) - self.rules.session_gap_us

        def idle(metadata: dict[str, str]) -> bool:
            return metadata.get("open") == "1" and int(metadata.get("last_received_us", "0")) < horizon

        return self._sweep(shard, states, idle, self._finalize, horizon, "finalize")

    def forget_erase_markers(self, shard: int = 0, states: StateListing | None = None) -> int:
        """Delete the shard's erase markers older than ERASE_MARKER_KEEP_US: by then no chunk
        from before the erase can arrive, and the state object still names the uid."""
        horizon = self.clock() - ERASE_MARKER_KEEP_US

        def old_marker(metadata: dict[str, str]) -> bool:
            return "erased_before_us" in metadata and int(metadata["erased_before_us"]) < horizon

        return len(self._sweep(shard, states, old_marker, self._forget, horizon, "forget"))

    def _sweep(
        self,
        shard: int,
        states: StateListing | None,
        due: Callable[[dict[str, str]], bool],
        work: Callable[[Held, int], int],
        horizon_us: int,
        event: str,
    ) -> set[str]:
        """`work(held, horizon_us)` under the lease of each of the shard's users whose state
        metadata is `due` (from `states`, or a fresh listing); returns the uids it did work
        for (a nonzero result). A user a pass holds is logged `<event>_deferred` and left for
        the next tick."""
        done: set[str] = set()
        for name, metadata in self.store.list_states() if states is None else states:
            if not due(metadata):
                continue
            uid = uid_of_state(name)
            if shard_of(uid, self.config.assembler_shards) != shard:
                continue
            try:
                if self.leases.run(uid, work, horizon_us):
                    done.add(uid)
            except (LeaseBusy, PreconditionFailed):
                logs.info(f"{event}_deferred", uid=uid)
            except Exception as exc:  # noqa: BLE001 - try again next tick
                logs.error(f"{event}_failed", uid=uid, error=repr(exc))
        return done

    def _finalize(self, held: Held, horizon_us: int) -> int:
        rec = held.state.open
        if rec is None or rec.last_received_us >= horizon_us:
            self.leases.release(held)  # a chunk arrived meanwhile: nothing to do
            return 0
        self.flusher.finalize(held)
        return 1

    def _forget(self, held: Held, horizon_us: int) -> int:
        state = held.state
        if not state.is_erase_marker() or state.erased_before_us >= horizon_us:
            self.leases.release(held)  # the user streamed again meanwhile: a state to keep
            return 0
        self.leases.check(held)
        self.store.delete_state(state.uid, held.generation)
        logs.info("erase_marker_forgotten", uid=state.uid, erased_before=format_time(state.erased_before_us))
        return 1
