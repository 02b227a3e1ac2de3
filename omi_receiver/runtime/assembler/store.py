"""Cloud Storage operations of the assembler.

Every write is idempotent so it is safe for the client to retry it on 429/5xx:
uploads either carry a generation precondition (state) or go to a name nobody else
writes (parts, headers, data objects carry the writer's unique token); composes write
either such a unique name or the WAV, whose content is a function of committed state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

from google.api_core import exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from .. import wav
from .recording import STATE_PREFIX, ShardLease, UserState, shard_lease_name, state_name

WAV_CONTENT_TYPE = "audio/wav"
PCM_CONTENT_TYPE = "application/octet-stream"

# Passed explicitly: the client's default only retries writes that carry a precondition,
# and our unique-name writes are idempotent without one.
RETRY = DEFAULT_RETRY.with_deadline(60.0)


class PreconditionFailed(Exception):
    """The state object changed since it was read: another pass holds or took it."""


@dataclasses.dataclass
class OpCounter:
    """Counts Cloud Storage requests by kind (for logs and the benchmark)."""

    uploads: int = 0
    composes: int = 0
    reads: int = 0
    deletes: int = 0
    lists: int = 0
    patches: int = 0

    @property
    def writes(self) -> int:
        return self.uploads + self.composes + self.patches


class Store:
    def __init__(self, client: storage.Client, bucket: str, hook: Callable[[str], None] | None = None, retry=None):
        self.bucket = client.bucket(bucket)
        self.retry = retry or RETRY
        self.bucket_name = bucket
        self.ops = OpCounter()
        # Called before every request with its step name; tests use it to kill a pass there.
        self._hook = hook or (lambda step: None)

    # --- state: the commit point -----------------------------------------------------

    def read_state(self, uid: str) -> tuple[UserState | None, int]:
        """(state, generation); (None, 0) when the user has no state yet."""
        data, generation = self._read_json(state_name(uid), "read_state")
        return (UserState.from_json(data) if data is not None else None), generation

    def write_state(self, state: UserState, generation: int) -> int:
        """Write iff the object is still at `generation` (0: must not exist); new generation."""

        def ours() -> int | None:
            current, current_gen = self.read_state(state.uid)
            return current_gen if current is not None and current.write_id == state.write_id else None

        return self._write_json_if(
            state_name(state.uid), state.to_json(), generation, "write_state", ours, metadata=state.list_metadata()
        )

    def delete_state(self, uid: str, generation: int) -> None:
        """Delete the user's state iff it is still at `generation` (the lease's write)."""
        self._hook("delete_state")
        self.ops.deletes += 1
        try:
            self.bucket.blob(state_name(uid)).delete(if_generation_match=generation, retry=self.retry)
        except exceptions.PreconditionFailed:
            raise PreconditionFailed(state_name(uid)) from None
        except exceptions.NotFound:
            pass

    def read_shard_lease(self, shard: int) -> tuple[ShardLease | None, int]:
        data, generation = self._read_json(shard_lease_name(shard), "read_shard_lease")
        return (ShardLease.from_json(data) if data is not None else None), generation

    def write_shard_lease(self, shard: int, lease: ShardLease, generation: int) -> int:
        """Write iff unchanged since read (0: absent); raises PreconditionFailed otherwise."""

        def ours() -> int | None:
            current, current_gen = self.read_shard_lease(shard)
            return current_gen if current == lease else None

        return self._write_json_if(shard_lease_name(shard), lease.to_json(), generation, "write_shard_lease", ours)

    def _read_json(self, name: str, step: str) -> tuple[bytes | None, int]:
        self._hook(step)
        blob = self.bucket.blob(name)
        self.ops.reads += 1
        try:
            data = blob.download_as_bytes(retry=self.retry)
        except exceptions.NotFound:
            return None, 0
        return data, blob.generation

    def _write_json_if(
        self,
        name: str,
        body: bytes,
        generation: int,
        step: str,
        ours: Callable[[], int | None],
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Generation-checked write; returns the new generation, raises PreconditionFailed.
        `ours` reads the object back: its generation if it holds this very write, else None."""
        self._hook(step)
        blob = self.bucket.blob(name)
        if metadata:
            blob.metadata = metadata
        self.ops.uploads += 1
        try:
            blob.upload_from_string(
                body, content_type="application/json", if_generation_match=generation, retry=self.retry
            )
        except exceptions.PreconditionFailed:
            # A retried upload whose first attempt landed also ends here: recognise it.
            current_gen = ours()
            if current_gen is not None:
                return current_gen
            raise PreconditionFailed(name) from None
        return blob.generation

    def list_states(self) -> Iterator[tuple[str, dict[str, str]]]:
        """(uid, metadata) of every state object; one list request per 1,000 users."""
        self._hook("list_states")
        self.ops.lists += 1
        for blob in self.bucket.list_blobs(prefix=STATE_PREFIX, retry=self.retry):
            yield blob.name, blob.metadata or {}

    # --- audio objects ---------------------------------------------------------------

    def upload(
        self, name: str, data: bytes, content_type: str = PCM_CONTENT_TYPE, metadata: dict[str, str] | None = None
    ) -> None:
        self._hook("upload")
        blob = self.bucket.blob(name)
        if metadata:
            blob.metadata = metadata
        self.ops.uploads += 1
        try:
            blob.upload_from_string(data, content_type=content_type, if_generation_match=0, retry=self.retry)
        except exceptions.PreconditionFailed:
            pass  # a retry of this same write already landed (names are never reused)

    def upload_header(self, name: str, sample_rate: int, data_bytes: int) -> None:
        self.upload(name, wav.header(sample_rate, data_bytes))

    def compose(
        self,
        destination: str,
        sources: list[str],
        content_type: str = PCM_CONTENT_TYPE,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self._hook("compose")
        blob = self.bucket.blob(destination)
        blob.content_type = content_type
        if metadata:
            blob.metadata = metadata
        self.ops.composes += 1
        blob.compose([self.bucket.blob(s) for s in sources], retry=self.retry)

    def delete_quietly(self, names: list[str]) -> None:
        """Best-effort clean-up after a commit; leftovers go when the user's work/ prefix is
        cleared at their next finalization (or by the bucket's lifecycle rule)."""
        self.delete_each(names)

    def list_objects(self, prefix: str) -> list[storage.Blob]:
        self._hook("list")
        self.ops.lists += 1
        return list(self.bucket.list_blobs(prefix=prefix, retry=self.retry))

    def updated_us(self, name: str) -> int:
        """The server's time of the object's last write, in microseconds since the epoch."""
        self._hook("read_metadata")
        self.ops.reads += 1
        blob = self.bucket.get_blob(name, retry=self.retry)
        if blob is None or blob.updated is None:
            raise exceptions.NotFound(name)
        return int(blob.updated.timestamp() * 1_000_000)

    def delete_each(self, names: list[str], progress: Callable[[str], None] | None = None) -> list[str]:
        """Delete every name (already gone counts as deleted); returns those that failed."""
        failed: list[str] = []
        for name in names:
            self._hook("delete")
            self.ops.deletes += 1
            try:
                self.bucket.blob(name).delete(retry=self.retry)
            except exceptions.NotFound:
                pass
            except exceptions.GoogleAPICallError:
                failed.append(name)
                continue
            if progress:
                progress(name)
        return failed

    def delete_prefix(self, prefix: str) -> int:
        self._hook("delete_prefix")
        self.ops.lists += 1
        names = [b.name for b in self.bucket.list_blobs(prefix=prefix, retry=self.retry)]
        self.delete_quietly(names)
        return len(names)
