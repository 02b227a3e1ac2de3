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
_to_stderr_above_info = False  # set by the command-line tool, whose stdout is its output


def for_command_line() -> None:
    """Drop INFO lines and write the rest to stderr (the CLI runs assembler code)."""
    global _to_stderr_above_info
    _to_stderr_above_info = True


def log(severity: str, event: str, **fields) -> None:
    if _to_stderr_above_info and severity == "INFO":
        return
    entry = {"severity": severity, "message": event, "event": event, **fields}
    line = json.dumps(entry, default=str, separators=(",", ":"))
    stream = sys.stderr if _to_stderr_above_info else sys.stdout
    with _lock:
        stream.write(line + "\n")
        stream.flush()


def info(event: str, **fields) -> None:
    log("INFO", event, **fields)


def warning(event: str, **fields) -> None:
    log("WARNING", event, **fields)


def error(event: str, **fields) -> None:
    log("ERROR", event, **fields)
