"""The assembler's JSON log, followed while the soak runs (all its restarts append to one
file): pass statistics for the drain and the report, event counts, errors."""

from __future__ import annotations

import collections
import json
import statistics
import time
from pathlib import Path


class LogReader:
    """Follows the assembler's JSON log (all of its restarts append to one file)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.events = collections.Counter()
        self.sums = collections.Counter()
        self.passes: list[dict] = []
        self.errors: list[dict] = []

    def poll(self) -> list[dict]:
        """Read what was appended since the last poll; the new `assembler_pass` entries."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        new_passes = []
        for line in data[:end].split(b"\n"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # gunicorn's own lines, a line torn by SIGKILL
            if isinstance(entry, dict) and "event" in entry and self._count(entry):
                new_passes.append(entry)
        return new_passes

    def _count(self, entry: dict) -> bool:
        """Count one log entry; whether it is an assembler pass."""
        event = entry["event"]
        self.events[event] += 1
        if entry.get("severity") == "ERROR" and len(self.errors) < 50:
            self.errors.append({k: entry.get(k) for k in ("event", "uid", "error", "detail")})
        if event == "assembler_pass":
            entry["_seen"] = time.monotonic()
            self.passes.append(entry)
            return True
        if event == "duplicates_dropped":
            self.sums["duplicates_dropped"] += entry.get("duplicates", 0)
        elif event == "late_chunks":
            self.sums["late_chunks"] += entry.get("chunks", 0)
        elif event == "flush_deferred":
            self.sums[f"deferred_{entry.get('reason')}"] += entry.get("chunks", 0)
        return False

    def pass_summary(self) -> dict:
        passes = self.passes
        seconds = sorted(p.get("seconds", 0.0) for p in passes)
        keys = (
            "pulled",
            "chunks",
            "assembled",
            "duplicates",
            "late",
            "held",
            "poison",
            "retried",
            "flushes",
            "finalized",
        )
        return {
            "completed_passes": len(passes),
            **{f"total_{k}": sum(p.get(k, 0) for p in passes) for k in keys},
            "pass_seconds_p50": round(statistics.median(seconds), 2) if seconds else None,
            "pass_seconds_max": round(max(seconds), 2) if seconds else None,
            "max_pulled_in_a_pass": max((p.get("pulled", 0) for p in passes), default=0),
        }
