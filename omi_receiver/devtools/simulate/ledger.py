"""What became of each chunk of a stream: the `Summary` counts, the ledger file (one JSON line
per acknowledged chunk: what the soak checks the recordings against), and the progress bar.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from omi_receiver.devtools.simulate.schedule import Piece
from omi_receiver.runtime import contract


@dataclasses.dataclass
class Summary:
    """What one stream did. `sent` counts every POST (first attempts, retries, duplicates)."""

    mode: str
    uid: str
    sample_rate: int
    chunks: int = 0  # chunks in the schedule
    sent: int = 0  # POST requests made
    acked: int = 0  # chunks answered 2xx (duplicates not counted)
    retried: int = 0  # POSTs that were retries of a chunk
    failed: int = 0  # chunks whose attempts all failed or got a final status
    dropped: int = 0  # chunks never sent: rest of a failed batch, breaker open, stopped
    duplicates: int = 0  # extra POSTs of acked chunks (--duplicate-rate)
    cuts: int = 0  # first attempts cut part-way (cut_rate), each then retried
    bytes_acked: int = 0
    elapsed_s: float = 0.0
    breaker_trips: int = 0
    disabled: bool = False  # the sender gave up after `disable_after` failures in a row
    stopped: bool = False  # the `stop` event ended the stream early
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)  # "200", "error", ...

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.dropped == 0 and not self.stopped

    def line(self) -> str:
        return (
            f"{self.mode} uid={self.uid} rate={self.sample_rate}: "
            f"sent {self.sent}, acked {self.acked}/{self.chunks}, retried {self.retried}, "
            f"failed {self.failed}, dropped {self.dropped}, duplicates {self.duplicates}, "
            f"bytes acked {self.bytes_acked}, elapsed {self.elapsed_s:.2f} s"
        )

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ok": self.ok}


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    """One acknowledged chunk as the simulator saw it."""

    uid: str
    chunk_id: str | None  # response body's chunk_id, else the Idempotency-Key (legacy: None)
    bytes: int
    sha256: str
    sample_rate: int
    seq: int
    acked_at: str  # RFC 3339 UTC


def write_ledger_entry(out: IO[str], entry: LedgerEntry) -> None:
    out.write(json.dumps(dataclasses.asdict(entry), separators=(",", ":")) + "\n")
    out.flush()


def read_ledger(path: str | Path) -> list[LedgerEntry]:
    """All entries of a ledger file. A torn last line (writer killed) is ignored."""
    entries = []
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(LedgerEntry(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == len(lines):  # no newline after it: an interrupted write
                break
            raise ValueError(f"{path}:{number}: bad ledger line ({exc})") from exc
    return entries


class Ledger:
    """Books each chunk of one stream as acknowledged, failed or dropped: in `summary`, in
    the ledger file at `path` (appended; none when None) and on `bar` (progress_bar, closed
    by its owner). Close the ledger when the stream ends."""

    def __init__(self, summary: Summary, path: str | Path | None = None, bar=None):
        self.summary = summary
        self._file = open(path, "a", encoding="utf-8") if path is not None else None
        self._second = summary.sample_rate * contract.BYTES_PER_SAMPLE
        self._bar = bar

    def acked(self, piece: Piece, body: bytes, chunk_id: str | None) -> None:
        self.summary.acked += 1
        self.summary.bytes_acked += len(body)
        if self._file is not None:
            write_ledger_entry(
                self._file,
                LedgerEntry(
                    uid=self.summary.uid,
                    chunk_id=chunk_id,
                    bytes=len(body),
                    sha256=hashlib.sha256(body).hexdigest(),
                    sample_rate=self.summary.sample_rate,
                    seq=piece.seq,
                    acked_at=contract.format_time(contract.now_us()),
                ),
            )
        self._done(piece)

    def failed(self, piece: Piece) -> None:
        self.summary.failed += 1
        self._done(piece)

    def dropped(self, pieces: Sequence[Piece]) -> None:
        self.summary.dropped += len(pieces)
        for piece in pieces:
            self._done(piece)

    def stopped(self) -> None:
        """The stream was stopped: every chunk not booked yet counts as dropped."""
        summary = self.summary
        summary.stopped = True
        summary.dropped += summary.chunks - summary.acked - summary.failed - summary.dropped

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def _done(self, piece: Piece) -> None:
        if self._bar is not None:
            self._bar.update((piece.end - piece.start) / self._second)
            self._bar.set_postfix(
                acked=self.summary.acked, failed=self.summary.failed + self.summary.dropped, refresh=False
            )


def progress_bar(uid: str, audio_seconds: float, enabled: bool):
    """A tqdm bar over the stream's audio on stderr, or None (not `enabled`, or stderr is
    not a terminal)."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(
        total=round(audio_seconds, 3),
        unit="s",
        desc=uid,
        file=sys.stderr,
        leave=False,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}{postfix}]",
    )
