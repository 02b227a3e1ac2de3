"""Verification: every device's recordings, read from fake-gcs-server, against its ledgers:
each acknowledged chunk exactly once, in order, in valid WAVs, split where the rules say
(splits.py). `verify()` returns per-device results, totals and problems."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import wave

from bench.soak.devices import Device
from bench.soak.settings import Settings
from bench.soak.splits import check_splits, no_splits
from omi_receiver.devtools import simulate
from omi_receiver.runtime import wav as wavfmt
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX
from omi_receiver.runtime.contract import BYTES_PER_SAMPLE, parse_time

SENDER_COUNTS = ("chunks", "sent", "acked", "retried", "failed", "dropped", "duplicates", "cuts")


@dataclasses.dataclass
class Expected:
    """One acknowledged chunk, rebuilt from the device's PCM and its ledger entry."""

    phase: int
    seq: int
    data: memoryview
    rate: int
    acked_us: int
    chunk_id: str | None


@dataclasses.dataclass
class RecordingFile:
    name: str
    rate: int
    data: bytes
    metadata: dict
    chunks: list[int] = dataclasses.field(default_factory=list)  # indexes into expected


def expected_chunks(device: Device, problems: list[str]) -> list[Expected]:
    """The device's acknowledged chunks in order, each checked against the PCM it sent
    (`simulate.plan` gives each seq's bytes)."""
    out = []
    for number, phase in enumerate(device.phases):
        if phase.ledger is None or not phase.ledger.exists():
            continue
        pieces = {
            piece.seq: piece
            for batch in simulate.plan(len(phase.pcm), phase.rate, device.mode, device.interval, phase.pause_after)
            for piece in batch.pieces
        }
        view = memoryview(phase.pcm)
        last_seq = -1
        for entry in simulate.read_ledger(phase.ledger):
            piece = pieces.get(entry.seq)
            if piece is None:
                problems.append(f"{device.uid}: ledger seq {entry.seq} not in the schedule")
                continue
            data = view[piece.start : piece.end]
            if entry.bytes != len(data) or hashlib.sha256(data).hexdigest() != entry.sha256:
                problems.append(f"{device.uid}: ledger entry seq {entry.seq} does not match the PCM sent")
            if entry.seq <= last_seq:
                problems.append(f"{device.uid}: ledger seq {entry.seq} out of order")
            last_seq = entry.seq
            out.append(Expected(number, entry.seq, data, entry.sample_rate, parse_time(entry.acked_at), entry.chunk_id))
    return out


def check_wav(name: str, blob: bytes, problems: list[str]) -> tuple[int, bytes] | None:
    """(rate, PCM) if the object is a valid PCM16 mono WAV with exact header sizes."""
    import soundfile

    try:
        rate, data_bytes = wavfmt.parse_header(blob)
        if data_bytes != len(blob) - wavfmt.HEADER_BYTES:
            problems.append(
                f"{name}: header says {data_bytes} data bytes, object has {len(blob) - wavfmt.HEADER_BYTES}"
            )
            return None
        with wave.open(io.BytesIO(blob)) as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, BYTES_PER_SAMPLE, rate):
                problems.append(f"{name}: wave reads {w.getparams()}")
                return None
            frames = w.readframes(w.getnframes())
        samples, sf_rate = soundfile.read(io.BytesIO(blob), dtype="int16")
        if sf_rate != rate or samples.tobytes() != frames:
            problems.append(f"{name}: soundfile reads something else than wave")
            return None
        if frames != blob[wavfmt.HEADER_BYTES :]:
            problems.append(f"{name}: wave's frames differ from the data chunk")
            return None
        return rate, frames
    except Exception as exc:  # noqa: BLE001 - any parse failure is a broken recording
        problems.append(f"{name}: not a valid WAV ({exc})")
        return None


def match_chunks(recs: list[RecordingFile], expected: list[Expected]) -> dict:
    """Find every acknowledged chunk in the recordings (in name order): counts per chunk."""
    by_hash = {hashlib.sha256(e.data).digest(): i for i, e in enumerate(expected)}
    sizes = sorted({len(e.data) for e in expected})
    occurrences = [0] * len(expected)
    unknown = out_of_order = 0
    k = 0
    for rec in recs:
        data = memoryview(rec.data)
        p = 0
        while p < len(data):
            if k < len(expected) and data[p : p + len(expected[k].data)] == expected[k].data:
                found = k
            else:
                found = _find_by_content(data[p:], by_hash, sizes, expected)
            if found is None:
                # Bytes that are no acknowledged chunk (such as a cut upload's partial body kept
                # in place of its chunk): resync on the first of the next few chunks after them.
                unknown += 1
                p += _resync(data[p:], expected[k : k + 3])
                continue
            occurrences[found] += 1
            rec.chunks.append(found)
            p += len(expected[found].data)
            out_of_order += found != k
            k = max(k, found + 1)
    return {"occurrences": occurrences, "unknown_segments": unknown, "out_of_order": out_of_order}


def _find_by_content(data: memoryview, by_hash: dict, sizes: list[int], expected: list[Expected]) -> int | None:
    for size in sizes:
        index = by_hash.get(hashlib.sha256(data[:size]).digest())
        if index is not None and len(expected[index].data) == size:
            return index
    return None


def _resync(data: memoryview, following: list[Expected]) -> int:
    """How many bytes to skip: up to the first of `following` found further on, else all."""
    rest = bytes(data)
    starts = [i for i in (rest.find(bytes(e.data)) for e in following) if i > 0]
    return min(starts, default=len(rest))


def _recordings(
    device: Device, blobs: list, events: dict[str, int], problems: list[str]
) -> tuple[list[RecordingFile], int]:
    """The device's valid recordings in name order, and how many were `-late-` files."""
    recs, late_files = [], 0
    for blob in sorted(blobs, key=lambda b: b.name):
        if "-late-" in blob.name:
            late_files += 1
            problems.append(f"late recording {blob.name} (no chunk of a sequential sender should arrive late)")
        parsed = check_wav(blob.name, blob.download_as_bytes(), problems)
        if parsed is None:
            continue
        rate, data = parsed
        meta = blob.metadata or {}
        if meta.get("status") != "final":
            problems.append(f"{blob.name}: status {meta.get('status')!r}, not final")
        if meta.get("sample_rate") != str(rate):
            problems.append(f"{blob.name}: metadata sample_rate {meta.get('sample_rate')} != header {rate}")
        if events.get(blob.name, 0) < 1:
            problems.append(f"{blob.name}: no event on the recordings topic")
        recs.append(RecordingFile(blob.name, rate, data, meta))
    return recs, late_files


def _sender_counts(device: Device, expected: list[Expected], problems: list[str]) -> collections.Counter:
    """What the device's simulators counted, checked against its ledger."""
    sender = collections.Counter()
    for phase in device.phases:
        if phase.summary:
            sender.update({key: getattr(phase.summary, key) for key in SENDER_COUNTS})
            sender["stopped"] += phase.summary.stopped
        if phase.error:
            problems.append(f"simulator error: {phase.error}")
    if sender["failed"] or sender["dropped"]:
        problems.append(f"sender failed {sender['failed']} / dropped {sender['dropped']} chunks")
    if sender["acked"] != len(expected):
        problems.append(f"ledger has {len(expected)} entries, sender acked {sender['acked']}")
    return sender


def verify_device(
    device: Device, blobs: list, s: Settings, kills: list[dict], events: dict[str, int]
) -> tuple[dict, collections.Counter, list[str]]:
    """(the device's row in soak.json, its counts for the totals, its problems)."""
    problems: list[str] = []
    expected = expected_chunks(device, problems)
    recs, late_files = _recordings(device, blobs, events, problems)
    matched = match_chunks(recs, expected)
    occ = matched["occurrences"]
    lost = sum(1 for n in occ if n == 0)
    duplicated = sum(n - 1 for n in occ if n > 1) + matched["unknown_segments"]
    identical = (
        hashlib.sha256(b"".join(r.data for r in recs)).digest()
        == hashlib.sha256(b"".join(bytes(e.data) for e in expected)).digest()
    )
    for rec in recs:
        if any(expected[k].rate != rec.rate for k in rec.chunks):
            problems.append(f"{rec.name}: holds chunks of another sample rate")
        if rec.metadata.get("chunks") != str(len(rec.chunks)):
            problems.append(f"{rec.name}: metadata chunks {rec.metadata.get('chunks')} != {len(rec.chunks)} found")
    splits = check_splits(recs, expected, s, kills) if identical and expected else no_splits()
    if not identical:
        problems.append(
            f"audio differs from the acknowledged chunks (lost {lost}, duplicated "
            f"{duplicated}, out of order {matched['out_of_order']})"
        )
    problems += [f"missing split before chunk {m['chunk']}" for m in splits["missing_splits"]]
    problems += [
        f"unexpected split before chunk {u['chunk']} (idle {u['idle_s']} s, nearest kill {u['nearest_kill_s']} s away)"
        for u in splits["unexpected_splits"]
    ]
    sender = _sender_counts(device, expected, problems)
    assembled = sum(1 for n in occ if n > 0)
    counts = collections.Counter(sender)
    counts.update(
        {
            "ledger_acked": len(expected),
            "assembled": assembled,
            "lost": lost,
            "duplicated": duplicated,
            "out_of_order": matched["out_of_order"],
            "recordings": len(recs),
            "late_files": late_files,
            "missing_splits": len(splits["missing_splits"]),
            "unexpected_splits": len(splits["unexpected_splits"]),
            "ambiguous_boundaries": splits["ambiguous"],
            "audio_seconds": sum(len(e.data) / (BYTES_PER_SAMPLE * e.rate) for e in expected),
        }
    )
    row = {
        "uid": device.uid,
        "kind": device.kind(),
        "pauses": device.pauses,
        "switches_rate": device.switches_rate,
        "acked": len(expected),
        "assembled": assembled,
        "lost": lost,
        "duplicated": duplicated,
        "duplicate_posts": sender["duplicates"],
        "cut_uploads": sender["cuts"],
        "retried": sender["retried"],
        "recordings": len(recs),
        "identical": identical,
        "splits": splits["reasons"],
        "problems": problems[:20],
    }
    return row, counts, problems


def verify(devices: list[Device], recordings, s: Settings, kills: list[dict], events: dict[str, int]) -> dict:
    """Every device's recordings in bucket `recordings` against its ledgers; returns
    per-device and total results."""
    problems: list[str] = []
    totals = collections.Counter()
    per_device = []
    blobs_by_uid = collections.defaultdict(list)
    for blob in recordings.list_blobs(prefix=RECORDINGS_PREFIX):
        blobs_by_uid[blob.name[len(RECORDINGS_PREFIX) :].split("/", 1)[0]].append(blob)
    for uid in set(blobs_by_uid) - {d.uid for d in devices}:
        problems.append(f"recordings for an unknown uid {uid}")
    for device in devices:
        row, counts, device_problems = verify_device(device, blobs_by_uid.get(device.uid, []), s, kills, events)
        totals.update(counts)
        per_device.append(row)
        problems += [f"{device.uid}: {p}" for p in device_problems]
    return {"totals": dict(totals), "devices": per_device, "problems": problems}
