"""The faults injected while the devices stream: the assembler SIGKILLed at random moments,
preferably mid-pass (then restarted), every third time SIGSTOPped past the ack deadline
instead; and Cloud Storage failing a share of the assembler's requests (the fault proxy).
The senders' own faults (repeated POSTs, cut uploads, pauses) are the devices' options."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import threading
import time

from bench.soak.driver import AssemblerDriver
from bench.soak.report import Console, now_us
from bench.soak.settings import Settings
from omi_receiver.devtools.faultproxy import FaultProxy


def storage_proxy(gcs_url: str, s: Settings) -> FaultProxy:
    """A fault proxy in front of fake-gcs-server, started, failing nothing yet."""
    return FaultProxy(gcs_url, port=0, error_rate=0.0, mode="mixed", seed=s.seed).start()


class Faults:
    """Switches every fault on and off together; the kills and stalls done, for the report."""

    def __init__(self, driver: AssemblerDriver, proxy: FaultProxy, s: Settings, rng: random.Random, console: Console):
        self.driver, self.proxy, self.s, self.rng, self.console = driver, proxy, s, rng, console
        self.enabled = threading.Event()
        self.kills: list[dict] = []
        self.stalls: list[dict] = []
        self._thread = threading.Thread(target=self._kill_loop, daemon=True, name="kills")

    def start(self) -> None:
        """Faults on: storage errors now, the first kill after a random spacing."""
        self.proxy.error_rate = self.s.error_rate
        self.enabled.set()
        self._thread.start()

    def stop(self) -> tuple[dict, dict]:
        """Faults off; the storage requests made and the errors injected until now."""
        self.enabled.clear()
        self.proxy.error_rate = 0.0
        return dict(self.proxy.counts), dict(self.proxy.injected)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the kill thread to end (it ends once the driver stops)."""
        self._thread.join(timeout)

    def _kill_loop(self) -> None:
        low, high = self.s.kill_spacing
        number = 0
        while not self.driver.stop.wait(self.rng.uniform(low, high)):
            if not self.enabled.is_set() or not self._wait_into_a_pass():
                continue
            number += 1
            if number % 3 == 2:
                self._stall()
            else:
                self._kill()

    def _wait_into_a_pass(self) -> bool:
        """Prefer a moment inside a pass: wait (briefly) for a tick to be in flight, then a
        random part of the usual length of a pass. False when faults stopped meanwhile."""
        seen = self.driver.tick_number
        deadline = time.monotonic() + self.s.tick_seconds + 2
        while self.driver.tick_number == seen and time.monotonic() < deadline:
            time.sleep(0.02)
        recent = [d for _, d, outcome in self.driver.tick_log[-10:] if outcome == "ok"]
        typical = statistics.median(recent) if recent else 1.0
        return not self.driver.stop.wait(self.rng.uniform(0.05, 0.9) * typical) and self.enabled.is_set()

    def _kill(self) -> None:
        with self.driver.lock:
            record = self.driver.restart("fault")
        self.kills.append(record)
        self.console.say(
            f"killed the assembler ({'mid-pass' if record['mid_pass'] else 'between passes'}), "
            f"restarted in {record.get('restart_s', '?')} s"
        )

    def _stall(self) -> None:
        """SIGSTOP the assembler past the ack deadline, then SIGCONT: its messages are
        redelivered and its leases run out while it sleeps, as in a long GC pause or a
        starved instance; the pass then carries on with stale ack ids and leases."""
        since = self.driver.in_flight_since
        record = {
            "at_s": self.console.at(time.monotonic()),
            "wall_us": now_us(),
            "why": "stall",
            "mid_pass": since is not None,
            "into_pass_s": round(time.monotonic() - since, 2) if since is not None else None,
            "stopped_s": self.s.ack_deadline + 3,
        }
        pid = self.driver.fn.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGSTOP)
        try:
            self.driver.stop.wait(self.s.ack_deadline + 3)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
        self.stalls.append(record)
        self.console.say(
            f"stopped the assembler ({'mid-pass' if record['mid_pass'] else 'between passes'}) "
            f"for {record['stopped_s']} s"
        )

    @property
    def assembler_events(self) -> list[dict]:
        """Every moment the assembler was killed or stalled (hung-pass kills included)."""
        return self.kills + self.driver.hung + self.stalls
