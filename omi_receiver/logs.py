"""Structured logs: one JSON object per line, which Cloud Logging indexes.

`message` and `event` both carry the event name (log-based metrics in infra/ match on
`jsonPayload.event`); callers add fields such as uid, chunk_id, bytes, latency_ms.
Never pass audio or tokens.
"""

from __future__ import annotations

import json
import sys
import threading

_lock = threading.Lock()


def log(severity: str, event: str, **fields) -> None:
    entry = {"severity": severity, "message": event, "event": event, **fields}
    line = json.dumps(entry, default=str, separators=(",", ":"))
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def info(event: str, **fields) -> None:
    log("INFO", event, **fields)


def warning(event: str, **fields) -> None:
    log("WARNING", event, **fields)


def error(event: str, **fields) -> None:
    log("ERROR", event, **fields)
