"""The per-user lease: while a flush, a sweep or an erase writes for a user, no other pass
does.

The lease lives in the user's state object (`UserState.lease`, a `UserLease`) and is taken
with a generation-checked write: of two passes racing for it exactly one write succeeds.
The taker gets a `Held` handle (the state as read, the generation of its lease write) and
commits with that generation as precondition, so a pass that lost the user in between
cannot commit. The lease names the instance, not the thread, so within an instance (two
overlapping passes, a pass and a sweep) a per-user thread lock keeps them apart.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Callable
from typing import TypeVar

from .recording import UserLease, UserState
from .store import PreconditionFailed, Store

T = TypeVar("T")

# Stop writing for a user this long before the lease runs out.
LEASE_MARGIN_US = 5_000_000


class LeaseBusy(Exception):
    """Another pass holds this user's lease; the messages go back for redelivery."""


@dataclasses.dataclass
class Held:
    """What the work done under a user's lease holds."""

    state: UserState  # as read, with our lease in it
    generation: int  # of the state object, after our lease write
    until_us: int  # when the lease runs out
    tag: str  # unique per holding; names its temporary objects


class UserLeases:
    def __init__(self, store: Store, clock: Callable[[], int], lease_seconds: int):
        self.store = store
        self.clock = clock
        self.lease_us = lease_seconds * 1_000_000
        self.owner = uuid.uuid4().hex  # this instance, in the leases it writes
        self._locks_lock = threading.Lock()
        self._user_locks: dict[str, threading.Lock] = {}

    def run(self, uid: str, work: Callable[..., T], *args) -> T:
        """`work(held, *args)` holding the user's lease. After an ordinary error the lease
        is given back at once; a crash leaves it to expire."""
        with self._user_lock(uid):
            held = self.acquire(uid)
            try:
                return work(held, *args)
            except (LeaseBusy, PreconditionFailed):
                raise
            except Exception:
                self.release(held)
                raise

    def acquire(self, uid: str) -> Held:
        """Take the user's lease with a generation-checked write."""
        state, generation = self.store.read_state(uid)
        now = self.clock()
        if state is None:
            state = UserState(uid=uid)
        elif state.lease and state.lease.owner != self.owner and state.lease.until_us > now:
            raise LeaseBusy(uid)
        until = now + self.lease_us
        state.lease = UserLease(self.owner, until)
        state.write_id = uuid.uuid4().hex
        try:
            generation = self.store.write_state(state, generation)
        except PreconditionFailed:
            raise LeaseBusy(f"{uid}: another pass took the lease first") from None
        state.write_id = uuid.uuid4().hex  # the commit's own id
        return Held(state, generation, until, state.write_id[:10])

    def commit(self, held: Held, state: UserState) -> None:
        """The commit point: write `state` iff the object is still at our lease write."""
        self.check(held)
        self.store.write_state(state, held.generation)

    def release(self, held: Held) -> None:
        """After an ordinary error, give the user back at once (a crash waits for expiry)."""
        state = dataclasses.replace(held.state, lease=None, write_id=uuid.uuid4().hex)
        try:
            self.store.write_state(state, held.generation)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass

    def check(self, held: Held) -> None:
        """Raise LeaseBusy when the lease is about to run out.

        A pass that outlived its lease must not write: another pass may own the user now.
        The commit's precondition catches the rest; this check keeps a stalled pass from
        rewriting a WAV that a newer owner already wrote."""
        if self.clock() > held.until_us - LEASE_MARGIN_US:
            raise LeaseBusy(f"{held.state.uid}: lease expired")

    def _user_lock(self, uid: str) -> threading.Lock:
        with self._locks_lock:
            return self._user_locks.setdefault(uid, threading.Lock())
