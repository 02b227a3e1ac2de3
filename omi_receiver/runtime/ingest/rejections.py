"""Ingest's log of refused requests, with a bounded number of lines per instance.

Anyone who can reach the URL's host can send requests that are refused (a wrong token
needs no secret), and a line per refusal would let them write unbounded, billed log
entries. So per instance, each reason (the `error` code of the answer) is logged at once
the first time in a window of WINDOW_SECONDS, with `count: 1`; the rest of that window's
refusals for that reason are only counted, and when the window is over one line says how
many there were (`count: N`, `suppressed: true`). At most two lines per reason per minute
per instance, and the sum of `count` over the lines is still every refusal: the
`chunk_rejected` log-based metric adds up `count` (infra/monitoring.tf), so the dashboard
and the alert show rejections by reason exactly.

A window's summary is written by the first request (refused or accepted) after the window
ends, or when the instance shuts down.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Callable

from .. import logs

EVENT = "chunk_rejected"
WINDOW_SECONDS = 60.0


class RejectionLog:
    def __init__(
        self,
        window_seconds: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        flush_at_exit: bool = True,
    ):
        self.window_seconds = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._window_end = 0.0
        # reason -> [status, refusals not yet logged]; a reason is here once logged this window
        self._window: dict[str, list[int]] = {}
        self._exit_hook = not flush_at_exit  # registered on the first refusal

    def rejected(self, reason: str, status: int, **fields) -> None:
        """A refused request: logged now if it is the first of its reason this window."""
        with self._lock:
            due = self._roll(self._clock())
            first = reason not in self._window
            if first:
                self._window[reason] = [status, 0]
            else:
                self._window[reason][1] += 1
            if not self._exit_hook:  # a window's counts must not die with the instance
                atexit.register(self.flush)
                self._exit_hook = True
        _write(due, self.window_seconds)
        if first:
            logs.warning(EVENT, error=reason, status=status, count=1, **fields)

    def tick(self) -> None:
        """Called on every accepted request: writes a finished window's summary. Costs a
        clock read when there is nothing to write."""
        if self._window and self._clock() >= self._window_end:
            with self._lock:
                due = self._roll(self._clock())
            _write(due, self.window_seconds)

    def flush(self) -> None:
        """Write the summary of the current window now (at exit)."""
        with self._lock:
            due = self._take()
        _write(due, self.window_seconds)

    def _roll(self, now: float) -> dict[str, list[int]]:
        """Holding the lock: when the window is over, start a new one and return the old
        one's counts to write."""
        if now < self._window_end:
            return {}
        due = self._take()
        self._window_end = now + self.window_seconds
        return due

    def _take(self) -> dict[str, list[int]]:
        due, self._window = self._window, {}
        return due


def _write(due: dict[str, list[int]], window_seconds: float) -> None:
    for reason, (status, suppressed) in due.items():
        if suppressed:
            logs.warning(
                EVENT,
                error=reason,
                status=status,
                count=suppressed,
                suppressed=True,
                detail=f"{suppressed} more refusal(s) for {reason} in {window_seconds:g} s, "
                "counted but not logged one by one",
            )
