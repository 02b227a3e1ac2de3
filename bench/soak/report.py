"""The report: what a run saw (`Record`), turned into soak.json's result (`build`: chunks,
recordings, faults, checks, the assembler's passes, per-device rows) and the table printed
at the end; `Console` prints the progress lines on the way."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from bench.soak.settings import ROOT, US, Settings
from bench.soak.splits import split_summary
from omi_receiver.runtime.assembler.recording import WORK_PREFIX


def now_us() -> int:
    return int(time.time() * US)


class Console:
    """Progress lines, stamped with the seconds since the run started."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.t0 = time.monotonic()
        self.lines: list[str] = []

    def at(self, monotonic: float) -> float:
        """A moment as seconds into the run, as soak.json records it."""
        return round(monotonic - self.t0, 1)

    def say(self, text: str) -> None:
        line = f"[soak {time.monotonic() - self.t0:7.1f}s] {text}"
        self.lines.append(line)
        if not self.quiet:
            print(line, flush=True)


@dataclasses.dataclass
class Record:
    """What a run saw, gathered step by step."""

    started_at: dt.datetime
    code: dict  # provenance()
    load: list[float] = dataclasses.field(default_factory=list)  # 1-min load averages, every 5 s
    devices: list = dataclasses.field(default_factory=list)  # devices.Device
    streaming_s: float = 0.0
    stuck: list[str] = dataclasses.field(default_factory=list)  # devices still running at the end
    storage_requests: dict = dataclasses.field(default_factory=dict)  # by kind, while faults were on
    injected: dict = dataclasses.field(default_factory=dict)  # "kind:when:status" -> count
    drain_s: float = 0.0
    drained: bool = False
    dead_lettered: int = 0
    undelivered: int = 0  # chunks left on the chunk subscription
    events: collections.Counter = dataclasses.field(default_factory=collections.Counter)  # name -> events
    events_published: int = 0
    open_recordings: int = 0
    work_left: list[str] = dataclasses.field(default_factory=list)  # object names
    verification: dict = dataclasses.field(default_factory=dict)  # verify.verify()


def _sources_digest(code: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([code / "main.py", *(code / "omi_receiver").rglob("*.py")]):
        digest.update(str(path.relative_to(code)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def provenance(code: Path) -> dict:
    """Which code the functions ran: commit, uncommitted changes, a hash of the sources."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=code, capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    label = code / ".soak-commit"  # an exported tree (git archive) names its commit here
    if label.exists():
        return {
            "commit": label.read_text().strip(),
            "uncommitted": [],
            "tree": f"export at {code}",
            "sources_sha256": _sources_digest(code),
        }
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted": git("status", "--porcelain", "--", "main.py", "omi_receiver").splitlines(),
        "sources_sha256": _sources_digest(code),
        "tree": "this repository" if code == ROOT else str(code),
    }


def fault_summary(record: Record, faults, log) -> dict:
    """Every fault injected, and what the assembler made of the redeliveries."""
    totals, injected = record.verification["totals"], record.injected
    by = {"kind": collections.Counter(), "when": collections.Counter(), "status": collections.Counter()}
    for key, count in injected.items():
        for part, value in zip(("kind", "when", "status"), key.split(":"), strict=True):
            by[part][value] += count
    return {
        "assembler_kills": len(faults.kills),
        "kills_mid_pass": sum(1 for k in faults.kills if k.get("mid_pass")),
        "kills": faults.kills,
        "assembler_stalls": len(faults.stalls),
        "stalls": faults.stalls,
        "storage_errors": sum(injected.values()),
        "storage_errors_by_status": dict(by["status"]),
        "storage_errors_by_request": dict(by["kind"]),
        "storage_errors_before_after": dict(by["when"]),
        "storage_requests": sum(record.storage_requests.values()),
        "duplicate_posts": totals.get("duplicates", 0),
        "cut_uploads": totals.get("cuts", 0),
        "pausing_devices": sum(d.pauses for d in record.devices),
        "rate_switching_devices": sum(d.switches_rate for d in record.devices),
        "sender_retries": totals.get("retried", 0),
        "duplicates_dropped_by_assembler": log.sums["duplicates_dropped"],
        # Chunks dropped as duplicates beyond the duplicate POSTs: deliveries of chunks
        # already committed (a kill between commit and ack, an ack deadline that ran out
        # during a stall). Redeliveries of uncommitted chunks are not duplicates.
        "redelivered_after_commit": max(0, log.sums["duplicates_dropped"] - totals.get("duplicates", 0)),
        "flushes_deferred_chunks": {k: v for k, v in log.sums.items() if k.startswith("deferred_")},
    }


def check_summary(record: Record, hung: list[dict], log) -> dict:
    totals = record.verification["totals"]
    return {
        **{
            name: totals.get(name, 0)
            for name in ("lost", "duplicated", "out_of_order", "late_files", "missing_splits", "unexpected_splits")
        },
        "dead_lettered": record.dead_lettered,
        "undelivered_chunks_left": record.undelivered,
        "open_recordings_left": record.open_recordings,
        "work_objects_left": len(record.work_left),
        "drained": record.drained,
        "hung_passes": len(hung),
        "devices_stuck": len(record.stuck),
        "poison_messages": log.events["poison_message"],
    }


def problems_of(record: Record, checks: dict, faults: dict, s: Settings) -> list[str]:
    """Every failed check, devices' first."""
    problems = list(record.verification["problems"])
    for d in record.verification["devices"]:
        want = 1 if d["pauses"] else 0
        if d["identical"] and d["splits"].get("gap", 0) != want:
            problems.append(f"{d['uid']}: {d['splits'].get('gap', 0)} splits at pauses, expected {want}")
    for name in (
        "dead_lettered",
        "undelivered_chunks_left",
        "open_recordings_left",
        "devices_stuck",
        "poison_messages",
        "hung_passes",
    ):
        if checks[name]:
            problems.append(f"{name}: {checks[name]}")
    if not record.drained:
        problems.append("the assembler did not drain within the drain timeout")
    if checks["work_objects_left"]:
        problems.append(
            f"{len(record.work_left)} temporary objects left under {WORK_PREFIX}: {', '.join(record.work_left[:5])}"
        )
    if faults["assembler_kills"] == 0 and s.wall_seconds > s.kill_spacing[1] + 5:
        problems.append("no kill happened")
    return problems


def build(s: Settings, record: Record, console: Console, log, driver, faults) -> dict:
    """soak.json's result. `log`: assembler_log.LogReader; `driver`: the AssemblerDriver
    (ticks, hung passes, restarts); `faults`: the Faults (kills, stalls)."""
    totals = record.verification["totals"]
    fault_counts = fault_summary(record, faults, log)
    checks = check_summary(record, driver.hung, log)
    problems = problems_of(record, checks, fault_counts, s)
    return {
        "passed": not problems and checks["lost"] == 0 and checks["duplicated"] == 0,
        "started_at": record.started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code": record.code,
        "settings": s.reported(),
        "machine": {
            "nproc": os.cpu_count(),
            "loadavg_1m_max": max(record.load, default=None),
            "loadavg_1m_mean": round(statistics.mean(record.load), 2) if record.load else None,
        },
        "timing": {
            "streaming_s": round(record.streaming_s, 1),
            "drain_s": round(record.drain_s, 1),
            "total_s": console.at(time.monotonic()),
            "assembler_restart_s_max": round(max(driver.restart_seconds), 2) if driver.restart_seconds else None,
        },
        "chunks": _chunks(totals, checks),
        "recordings": {
            "total": totals.get("recordings", 0),
            **split_summary(record.verification["devices"]),
            "ambiguous_boundaries": totals.get("ambiguous_boundaries", 0),
            "events_published": record.events_published,
            "distinct_event_names": len(record.events),
        },
        "faults": fault_counts,
        "checks": checks,
        "assembler": _assembler(log, driver),
        "problems": problems[:100],
        "devices": record.verification["devices"],
    }


def _chunks(totals: dict, checks: dict) -> dict:
    return {
        "scheduled": totals.get("chunks", 0),
        "posts": totals.get("sent", 0),
        "acknowledged": totals.get("ledger_acked", 0),
        "assembled": totals.get("assembled", 0),
        "lost": checks["lost"],
        "duplicated": checks["duplicated"],
        "sender_failed": totals.get("failed", 0),
        "sender_dropped": totals.get("dropped", 0),
        "audio_hours": round(totals.get("audio_seconds", 0) / 3600, 3),
    }


def _assembler(log, driver) -> dict:
    return {
        **log.pass_summary(),
        "ticks": dict(driver.ticks),
        "hung": driver.hung,
        "tick_seconds_max": max((d for _, d, _ in driver.tick_log), default=None),
        "slowest_ticks": sorted(driver.tick_log, key=lambda x: -x[1])[:5],
        "log_events": dict(log.events),
        "errors_sample": log.errors[:10],
    }


def print_table(r: dict, s: Settings) -> None:
    if s.quiet:
        return
    rows = _table_rows(r, s)
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for problem in r["problems"][:20]:
        print(f"  ! {problem}")
    print(flush=True)


def _table_rows(r: dict, s: Settings) -> list[tuple[str, object]]:
    c, f, k, rec = r["chunks"], r["faults"], r["checks"], r["recordings"]
    return [
        (
            "devices",
            f"{s.devices} ({f['pausing_devices']} pausing, {f['rate_switching_devices']} "
            f"switching rate) for {s.minutes:g} min at {s.speed:g}x",
        ),
        ("chunks scheduled / POSTs", f"{c['scheduled']} / {c['posts']}"),
        ("acknowledged", c["acknowledged"]),
        ("assembled", c["assembled"]),
        ("LOST", c["lost"]),
        ("DUPLICATED", c["duplicated"]),
        ("sender failed / dropped", f"{c['sender_failed']} / {c['sender_dropped']}"),
        (
            "recordings",
            f"{rec['total']}; on the {rec['split_checked_devices']} byte-identical devices: per "
            f"plain device {rec['per_plain_device']}, per pausing device {rec['per_pausing_device']}",
        ),
        (
            "splits by reason",
            f"{rec['splits_by_reason']}; at a pause: plain devices "
            f"{rec['gap_splits_per_plain_device']}, pausing {rec['gap_splits_per_pausing_device']}",
        ),
        (
            "assembler kills / stalls",
            f"{f['assembler_kills']} ({f['kills_mid_pass']} mid-pass) / "
            f"{f['assembler_stalls']} (SIGSTOP past the ack deadline)",
        ),
        (
            "storage errors",
            f"{f['storage_errors']} of {f['storage_requests']} requests "
            f"{f['storage_errors_by_status']} {f['storage_errors_before_after']}",
        ),
        ("storage errors by request", f["storage_errors_by_request"]),
        ("duplicate POSTs", f["duplicate_posts"]),
        ("cut uploads (then retried)", f["cut_uploads"]),
        (
            "duplicates dropped",
            f"{f['duplicates_dropped_by_assembler']} (of which redelivered after "
            f"commit {f['redelivered_after_commit']})",
        ),
        ("deferred (lease busy etc.)", f["flushes_deferred_chunks"]),
        ("dead-lettered", k["dead_lettered"]),
        (
            "late files / splits missing / unexpected",
            f"{k['late_files']} / {k['missing_splits']} / {k['unexpected_splits']}",
        ),
        ("open recordings / work objects left", f"{k['open_recordings_left']} / {k['work_objects_left']}"),
        ("hung passes (killed by watchdog)", k["hung_passes"]),
        (
            "passes",
            f"{r['assembler']['completed_passes']} completed, p50 "
            f"{r['assembler']['pass_seconds_p50']} s, max {r['assembler']['pass_seconds_max']} s",
        ),
        (
            "time",
            f"streaming {r['timing']['streaming_s']} s, drain {r['timing']['drain_s']} s, total "
            f"{r['timing']['total_s']} s; load avg max {r['machine']['loadavg_1m_max']}",
        ),
        ("RESULT", "PASS" if r["passed"] else "FAIL"),
    ]


def write(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
