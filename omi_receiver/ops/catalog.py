"""The recordings in the bucket, as the people who run this see them: list, stats, download.

Read-only; everything comes from object listings (name, size, CRC32C and the custom
metadata the assembler writes on every WAV), so listing a user never downloads audio.
A recording is a WAV, or, once compacted (runtime/compaction), a .flac or .opus carrying
the WAV's metadata plus `pcm_bytes`; while both exist for a moment, the WAV counts.
Erasing is erase.py's job (`erase_user`): it must hold the user's lease.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import google_crc32c
from google.api_core import exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from omi_receiver.runtime import wav
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX, WORK_PREFIX, state_name, user_prefixes
from omi_receiver.runtime.compaction import Format, compacted_name
from omi_receiver.runtime.compaction.compactor import PCM_BYTES, RECORDING_FORMATS, WAV_SUFFIX
from omi_receiver.runtime.contract import BYTES_PER_SAMPLE, InvalidChunk, parse_time

# A recording's object: the assembler's WAV, or what compaction made of it (same metadata).
SUFFIXES = RECORDING_FORMATS
_BLOCK = 1 << 20
# An open recording is rewritten on every flush; a download that loses its generation to a
# newer one starts again on the newest, this many times.
DOWNLOAD_ATTEMPTS = 3


class CatalogError(Exception):
    """Nothing wrong with the code: the request cannot be served (message says why)."""


@dataclasses.dataclass(frozen=True)
class RecordingInfo:
    uid: str
    id: str  # the file name without its suffix: start stamp, plus -late-<chunk id> for late chunks
    name: str  # object name
    format: str  # "wav", or "flac" / "opus" once compacted
    start: dt.datetime
    duration_seconds: float
    bytes: int  # stored: the object's size
    sample_rate: int
    status: str  # "open" (still growing) or "finalized"
    late: bool
    generation: int
    crc32c: str  # base64, as Cloud Storage reports it

    def to_json(self) -> dict:
        body = dataclasses.asdict(self)
        body["start"] = self.start.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return body


def suffix_of(name: str) -> str | None:
    """The recording suffix `name` ends in (.wav, .flac, .opus), or None."""
    return next((suffix for suffix in SUFFIXES if name.endswith(suffix)), None)


def recording_info(blob: storage.Blob) -> RecordingInfo | None:
    """A recording (WAV, or its compacted FLAC or Opus), or None for anything else
    (sidecars, strangers)."""
    suffix = suffix_of(blob.name)
    if not blob.name.startswith(RECORDINGS_PREFIX) or suffix is None:
        return None
    uid = blob.name[len(RECORDINGS_PREFIX) :].split("/", 1)[0]
    meta = blob.metadata or {}
    size = blob.size or 0
    try:
        sample_rate = int(meta["sample_rate"])
        start = dt.datetime.fromtimestamp(parse_time(meta["start"]) / 1e6, tz=dt.UTC)
        # A compacted file's size says nothing of its length: the WAV's data size came along.
        pcm = max(0, size - wav.HEADER_BYTES) if suffix == WAV_SUFFIX else int(meta[PCM_BYTES])
    except (KeyError, ValueError, InvalidChunk):  # not written by the assembler or compaction: skip it
        return None
    duration = pcm / (BYTES_PER_SAMPLE * sample_rate)
    return RecordingInfo(
        uid=uid,
        id=blob.name.rsplit("/", 1)[1][: -len(suffix)],
        name=blob.name,
        format=SUFFIXES[suffix],
        start=start,
        duration_seconds=round(duration, 3),
        bytes=size,
        sample_rate=sample_rate,
        status="open" if meta.get("status") == "open" else "finalized",
        late=meta.get("late") == "true",
        generation=blob.generation or 0,
        crc32c=blob.crc32c or "",
    )


class Catalog:
    """`retry` and `timeout` go with every request (the client's defaults unless given:
    a 120 s retry deadline, 60 s per request; the CLI passes shorter ones)."""

    def __init__(
        self, client: storage.Client, bucket: str, retry=DEFAULT_RETRY, timeout: float | tuple[float, float] = 60
    ):
        self.bucket = client.bucket(bucket)
        self.bucket_name = bucket
        self.retry = retry
        self.timeout = timeout

    def recordings(self, uid: str, since: dt.datetime | None = None) -> list[RecordingInfo]:
        """The user's recordings, newest first; `since` keeps those starting at or after it.
        Raises CatalogError for an unknown uid, an empty or missing bucket."""
        found = _one_per_recording(map(recording_info, self._list(f"{RECORDINGS_PREFIX}{uid}/")))
        if not found:
            self._explain_nothing_for(uid)
        if since is not None:
            found = [info for info in found if info.start >= since]
        return sorted(found, key=lambda info: (info.start, info.name), reverse=True)

    def stats(self) -> dict:
        """Users, recordings, hours and bytes stored, open recordings, temporary bytes:
        two listings (recordings/ and work/), no object read."""
        users, recordings, seconds, size, open_count = set(), 0, 0.0, 0, 0
        for info in _one_per_recording(map(recording_info, self._list(RECORDINGS_PREFIX))):
            users.add(info.uid)
            recordings += 1
            seconds += info.duration_seconds
            size += info.bytes
            open_count += info.status == "open"
        temporary = sum(blob.size or 0 for blob in self._list(WORK_PREFIX))
        return {
            "bucket": self.bucket_name,
            "users": len(users),
            "recordings": recordings,
            "hours": round(seconds / 3600, 3),
            "bytes": size,
            "open_recordings": open_count,
            "temporary_bytes": temporary,
        }

    def user_objects(self, uid: str) -> list[storage.Blob]:
        """Every object of the user: recordings and what sits beside them, temporaries,
        and the state object."""
        blobs = [blob for prefix in user_prefixes(uid) for blob in self._list(prefix)]
        blobs += [b for b in self._list(state_name(uid)) if b.name == state_name(uid)]
        return blobs

    def download(
        self, info: RecordingInfo, directory: Path, progress: Callable[[int, int], None] | None = None
    ) -> tuple[Path, RecordingInfo]:
        """Download to `directory`/<id>.wav (.flac, .opus: the object as it is), checking
        size and CRC32C (composed objects carry no MD5). An open recording is taken at the
        generation listed; if a flush replaces it meanwhile, the newest is taken instead.
        Returns (path, what was downloaded)."""
        for _ in range(DOWNLOAD_ATTEMPTS):
            target = directory / f"{info.id}.{info.format}"  # a WAV compacted meanwhile: .flac
            partial = target.with_name(target.name + ".part")
            _ready_to_write(directory, target, partial)
            try:
                ok = self._fetch(info, partial, progress)
            except exceptions.NotFound:  # that generation was replaced (or the object erased)
                ok = False
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            if ok:
                _keep(partial, target)
                return target, info
            partial.unlink(missing_ok=True)
            newest = self._get_blob(info.name)
            if newest is None and info.format == "wav":
                newest = self._compacted(info)  # compaction replaced it meanwhile
            if newest is None:
                raise CatalogError(f"{info.name} was deleted while downloading")
            current = recording_info(newest) or info
            if (current.generation, current.bytes, current.crc32c) == (info.generation, info.bytes, info.crc32c):
                # The object is as listed, the bytes were not: a corrupt transfer.
                raise CatalogError(
                    f"{info.name}: the downloaded size or CRC32C does not match the object's "
                    f"({info.bytes} bytes, CRC32C {info.crc32c}); the file was not kept"
                )
            info = current  # a flush replaced it meanwhile (or compaction): take the newest
        raise CatalogError(f"{info.name} kept changing while downloading; try again")

    def _compacted(self, info: RecordingInfo) -> storage.Blob | None:
        copies = (compacted_name(info.name, fmt) for fmt in Format if fmt is not Format.OFF)
        return next(filter(None, map(self._get_blob, copies)), None)

    def _fetch(self, info: RecordingInfo, path: Path, progress) -> bool:
        """Download the listed generation; True if size and CRC32C match the listing."""
        blob = self.bucket.blob(info.name, generation=info.generation)
        checksum = google_crc32c.Checksum()
        done = 0
        # _writing wraps this machine's file calls only: requests' errors are OSErrors too.
        with _writing(path.parent):
            out = open(path, "wb")
        with (
            out,
            blob.open("rb", chunk_size=_BLOCK, raw_download=True, retry=self.retry, timeout=self.timeout) as source,
        ):
            while block := source.read(_BLOCK):
                with _writing(path.parent):
                    out.write(block)
                checksum.update(block)
                done += len(block)
                if progress:
                    progress(done, info.bytes)
            with _writing(path.parent):
                out.flush()  # a full disk fails here, not in the close after
        got = base64.b64encode(checksum.digest()).decode()
        return done == info.bytes and got == info.crc32c

    def _list(self, prefix: str) -> Iterable[storage.Blob]:
        try:
            return list(self.bucket.list_blobs(prefix=prefix, retry=self.retry, timeout=self.timeout))
        except exceptions.NotFound:
            raise CatalogError(
                f"bucket {self.bucket_name} does not exist (RECORDINGS_BUCKET; "
                "`terraform output` in infra/, or .local/stack.env for the local stack)"
            ) from None

    def _explain_nothing_for(self, uid: str) -> None:
        if self._get_blob(state_name(uid)) is not None:
            raise CatalogError(
                f"uid {uid!r} has no recordings in gs://{self.bucket_name} "
                "(none finished a flush yet, or they were erased)"
            )
        if not any(
            True
            for _ in self.bucket.list_blobs(
                prefix=RECORDINGS_PREFIX, max_results=1, retry=self.retry, timeout=self.timeout
            )
        ):
            raise CatalogError(f"gs://{self.bucket_name} holds no recordings yet")
        raise CatalogError(f"unknown uid {uid!r}: no recordings in gs://{self.bucket_name}")

    def _get_blob(self, name: str) -> storage.Blob | None:
        return self.bucket.get_blob(name, retry=self.retry, timeout=self.timeout)


def _one_per_recording(infos: Iterable[RecordingInfo | None]) -> list[RecordingInfo]:
    """Between compaction's upload and its delete of the WAV, a recording has two objects:
    count it once, as its WAV (still the original)."""
    chosen: dict[tuple[str, str], RecordingInfo] = {}
    for info in infos:
        if info is None:
            continue
        key = (info.name.rsplit("/", 1)[0], info.id)
        if key not in chosen or info.format == "wav":
            chosen[key] = info
    return list(chosen.values())


def decode_to_wav(path: Path) -> Path:
    """A downloaded .flac or .opus decoded to PCM16 WAV next to it (the compressed file is
    removed). Opus is lossy: the WAV is what it decodes to, not the original bytes."""
    import soundfile  # only this option needs it

    target = path.with_suffix(WAV_SUFFIX)
    partial = target.with_name(target.name + ".part")
    try:
        with soundfile.SoundFile(path) as source, _writing(path.parent):
            with soundfile.SoundFile(partial, "w", source.samplerate, source.channels, "PCM_16", format="WAV") as out:
                for block in source.blocks(_BLOCK, dtype="int16"):
                    out.write(block)
    except soundfile.LibsndfileError as exc:
        partial.unlink(missing_ok=True)
        raise CatalogError(f"{path} does not decode: {exc}") from None
    _keep(partial, target)
    path.unlink()
    return target


# --- this machine's side of a download -------------------------------------------------------


def _ready_to_write(directory: Path, target: Path, partial: Path) -> None:
    """Fail in one line, before anything is fetched, where the file cannot be written."""
    with _writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
        partial.open("wb").close()  # _fetch writes it; an error removes it
    if target.is_dir():
        partial.unlink()
        raise CatalogError(f"cannot write to {directory}: a directory named {target.name} is in the way")


def _keep(partial: Path, target: Path) -> None:
    try:
        with _writing(target.parent):
            os.replace(partial, target)
    except CatalogError:
        partial.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _writing(directory: Path):
    """This machine's file errors (a file where a directory should be, no permission, a
    read-only or full disk) as one line naming the directory asked for."""
    try:
        yield
    except (FileExistsError, NotADirectoryError) as exc:
        file = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
        reason = ("it is a file" if file == directory else f"{file} is a file") if file else exc.strerror
        raise CatalogError(f"cannot write to {directory}: {reason}") from None
    except OSError as exc:
        about = f" ({exc.filename})" if exc.filename and Path(exc.filename) != directory else ""
        raise CatalogError(f"cannot write to {directory}: {exc.strerror or exc}{about}") from None


def parse_since(text: str) -> dt.datetime:
    """YYYY-MM-DD or an ISO 8601 time; without a zone it is UTC."""
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CatalogError(f"--since {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
