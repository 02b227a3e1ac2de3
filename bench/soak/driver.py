"""The driver: both functions under functions-framework, and the assembler ticked one pass
at a time, as one Cloud Scheduler job does, restarted after a kill or a hung pass."""

from __future__ import annotations

import collections
import shutil
import subprocess
import threading
import time
from pathlib import Path

import requests

from bench.soak.report import Console, now_us
from bench.soak.settings import PROJECT, Settings
from omi_receiver.devtools import emulators, resources
from omi_receiver.devtools.functions import FunctionServer, Signature
from omi_receiver.devtools.ticker import tick_event


def functions(s: Settings, env: dict[str, str], storage_url: str, workdir: Path) -> tuple[FunctionServer, ...]:
    """(ingest, assembler) serving the main.py of `s.code`; the assembler's Cloud Storage
    is `storage_url` (the fault proxy). Not started."""
    main = s.code / "main.py"
    ingest = FunctionServer("receive_chunk", main, emulators.free_port(), workdir / "ingest.log", env)
    assembler = FunctionServer(
        "assemble_recordings",
        main,
        emulators.free_port(),
        workdir / "assembler.log",
        {**env, "STORAGE_EMULATOR_HOST": storage_url},
        Signature.CLOUDEVENT,
    )
    return ingest, assembler


class AssemblerDriver:
    """Ticks the assembler one pass at a time; restarts it on demand (`restart`).

    Like Cloud Scheduler with one job, a tick is sent only after the previous pass ended.
    A pass that runs longer than `hang_after` is treated as the platform would a function
    past its timeout: the process is killed and restarted, and the pass counts as hung
    (a failed check: the pass must end by itself).
    """

    def __init__(self, fn: FunctionServer, s: Settings, console: Console, workdir: Path):
        self.fn, self.s, self.console, self.workdir = fn, s, console, workdir
        self.hang_after = max(30.0, s.pass_seconds + 30.0)
        self.lock = threading.Lock()  # held while the process is killed and restarted
        self.stop = threading.Event()
        self.in_flight_since: float | None = None
        self.tick_number = 0
        self.ticks = collections.Counter()
        self.tick_log: list[tuple[float, float, str]] = []  # (start s, duration s, outcome)
        self.hung: list[dict] = []
        self.restart_seconds: list[float] = []
        self.last_kill_at = 0.0
        self._thread: threading.Thread | None = None
        self._topic = f"projects/{PROJECT}/topics/{resources.TICKS_TOPIC}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._tick_loop, daemon=True, name="ticks")
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Stop ticking; waits for the pass in flight (up to `timeout`)."""
        self.stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.hang_after + 5 if timeout is None else timeout)

    def shut_down(self) -> None:
        """Stop ticking and stop the assembler (not while a restart is under way)."""
        self.join(timeout=0)
        with self.lock:
            self.fn.stop()

    def restart(self, why: str) -> dict:
        """SIGKILL the assembler's process group and start it again (hold `lock`); a record
        of the kill for the report."""
        since = self.in_flight_since
        self.fn.kill()
        killed_at = self.last_kill_at = time.monotonic()
        record = {
            "at_s": self.console.at(killed_at),
            "wall_us": now_us(),
            "why": why,
            "mid_pass": since is not None,
            "into_pass_s": round(killed_at - since, 2) if since is not None else None,
        }
        if self.stop.is_set():
            return record  # shutting down: no new process
        try:
            self.fn.start(timeout=90)
        except emulators.EmulatorError as exc:
            record["restart_failed"] = str(exc)
            self.console.say(f"assembler restart failed: {exc}")
            self.stop.set()
            return record
        record["restart_s"] = round(time.monotonic() - killed_at, 2)
        self.restart_seconds.append(record["restart_s"])
        return record

    def _tick_loop(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            started = time.monotonic()
            with self.lock:
                pass  # wait out a restart
            outcome = self._tick(session)
            if outcome == "hung" and not self.stop.is_set():
                self._restart_hung()
            if outcome != "ok":
                session.close()
                session = requests.Session()
            ended = time.monotonic()
            self.in_flight_since = None
            self.ticks[outcome] += 1
            self.tick_log.append((self.console.at(started), round(ended - started, 2), outcome))
            self.stop.wait(max(0.2, self.s.tick_seconds - (ended - started)))
        session.close()

    def _tick(self, session: requests.Session) -> str:
        """One pass: "ok", "status_<code>", "hung" or "connection_error"."""
        headers, body = tick_event(self._topic)
        self.in_flight_since = time.monotonic()
        self.tick_number += 1
        try:
            response = session.post(f"{self.fn.url}/", data=body, headers=headers, timeout=self.hang_after)
        except requests.Timeout:
            return "hung"
        except requests.RequestException:
            return "connection_error"  # killed mid-pass, or restarting
        return "ok" if response.status_code < 300 else f"status_{response.status_code}"

    def _restart_hung(self) -> None:
        with self.lock:
            self._dump_stacks()
            record = self.restart("hung pass")
        self.hung.append(record)
        self.console.say(f"a pass ran {self.hang_after:.0f} s without ending: killed and restarted")

    def _dump_stacks(self) -> None:
        """Where a hung pass waits, if py-spy is installed (it is not a dependency)."""
        spy = shutil.which("py-spy")
        if not spy or self.fn.pid is None:
            return
        pids = subprocess.run(
            ["pgrep", "-g", str(self.fn.pid)], capture_output=True, text=True, timeout=10
        ).stdout.split()
        with open(self.workdir / "hung-pass-stacks.txt", "a") as out:
            for pid in pids:
                out.write(
                    subprocess.run([spy, "dump", "--pid", pid], capture_output=True, text=True, timeout=30).stdout
                )
