"""Erasing a user (`omi-receiver recordings erase`): every object of theirs goes, and an
erase marker stays so that their chunks still on their way are dropped when they arrive
(docs/design.md, "Erasing a user").

The erase takes the user's lease as a flush does (the runtime's lease machinery), so no
pass writes for them meanwhile.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable

from omi_receiver.runtime import logs
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.assembler.leases import Held, UserLeases
from omi_receiver.runtime.assembler.recording import UserState, state_name, user_prefixes
from omi_receiver.runtime.assembler.store import Store
from omi_receiver.runtime.compaction.compactor import RECORDING_FORMATS
from omi_receiver.runtime.contract import format_time


@dataclasses.dataclass
class Erased:
    uid: str
    erased_before_us: int  # chunks received before this are dropped if they still arrive
    deleted: list[str]
    failed: list[str]  # could not be deleted (run the erase again)


def erase_user(assembler: Assembler, uid: str, progress: Callable[[str], None] | None = None) -> Erased:
    """Delete every object of the user: recordings (late ones too), what sits next to them
    (consumer sidecars) and temporaries. Raises LeaseBusy while a pass holds them.

    Under the user's lease no pass writes for them, so the objects listed then are all
    there is of the erased audio, and none is half written. The state object stays,
    holding no audio, as the erase marker: chunks received before the erase that are still
    on their way are dropped when they arrive, not made into a new recording. A pass
    deletes the marker ERASE_MARKER_KEEP_US later (forget_erase_markers). Chunks received
    after it start a new recording, whose names none of the listed objects share, so the
    deletes can run after the lease is given back.
    """
    store = assembler.store
    names, erased_at = assembler.leases.run(uid, _mark_erased, store, assembler.leases)
    failed = store.delete_each(names, progress)
    late_sidecars = _sidecars_written_since(store, uid, names)
    failed += store.delete_each(late_sidecars, progress)
    names += late_sidecars
    logs.info(
        "user_erased",
        uid=uid,
        objects=len(names) - len(failed),
        failed=len(failed),
        erased_before=format_time(erased_at),
    )
    return Erased(uid, erased_at, [n for n in names if n not in failed], failed)


def _mark_erased(held: Held, store: Store, leases: UserLeases) -> tuple[list[str], int]:
    """Under the lease: list the user's objects, then commit the erase marker."""
    uid = held.state.uid
    names = [blob.name for prefix in user_prefixes(uid) for blob in store.list_objects(prefix)]
    # The erase instant in Cloud Storage's clock (our lease write), not this machine's:
    # ingest stamps received_at with Google's clocks too.
    erased_at = store.updated_us(state_name(uid))
    marker = UserState(
        uid=uid,
        watermark_us=max(held.state.watermark_us, erased_at),
        erased_before_us=erased_at,
        write_id=uuid.uuid4().hex,
    )
    leases.commit(held, marker)
    return names, erased_at


def _sidecars_written_since(store: Store, uid: str, names: list[str]) -> list[str]:
    """A consumer may have written a sidecar of an erased recording after the listing (it
    read the WAV before the delete), and compaction a .flac or .opus of it: look once more,
    by the erased recordings' names (WAVs, or what compaction made of them)."""
    stems = tuple(
        name.removesuffix(suffix) + "." for name in names for suffix in RECORDING_FORMATS if name.endswith(suffix)
    )
    if not stems:
        return []
    return [
        blob.name
        for blob in store.list_objects(user_prefixes(uid)[0])
        if blob.name.startswith(stems) and blob.name not in names
    ]
