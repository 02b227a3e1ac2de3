"""Serve a function on this machine the way Cloud Run does: the functions-framework CLI
(gunicorn, one worker) in a process group of its own. The one launcher of the local stack,
the soak, the benchmarks and the tests.

    ingest = FunctionServer("receive_chunk", ROOT / "main.py", port, log, env).start()
    ...
    ingest.stop()     # SIGTERM to gunicorn's master, then SIGKILL to what is left

Stopping: SIGTERM goes to the master alone, never to the whole group, as Cloud Run sends
it to an instance it stops. The master answers it with gunicorn's graceful shutdown: it
sends its worker SIGTERM, whose handler only marks the worker as ending and wakes its
event loop; the loop answers what is in flight, closes its connections and returns, and
the worker runs its exit hooks (ingest writes the refusals it only counted) and leaves.

Not SIGINT (gunicorn's quick shutdown): the master then sends SIGQUIT, and the gthread
worker's SIGQUIT handler shuts its thread pool down from inside the signal handler. When
the signal lands while the worker's own loop is in ThreadPoolExecutor.submit() (a client
closing its kept-alive connection at that moment is enough), the handler waits for the
lock submit() holds, forever: about one stop in 30 hung until SIGKILL and lost the exit
hooks' lines (gunicorn's gthread, benoitc/gunicorn#3146 and its kin). Not the whole group
either: the worker got the signal twice, directly and from its master, and ran the
handler twice. Once the worker has gone the group is SIGKILLed: the master would only
spend another second or so tearing down its interpreter, with nothing left to write.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from omi_receiver.devtools.emulators import alive, group_members, wait_for_port, wait_group_gone

FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"
HOST = "127.0.0.1"
# How long a stop waits for the worker to finish what it has in flight before SIGKILL.
STOP_GRACE_SECONDS = 5.0
# How long a SIGKILLed group may take to vanish (a worker holds the port until it has).
KILL_WAIT_SECONDS = 10.0
_POLL_SECONDS = 0.02


class Signature(enum.StrEnum):
    """functions-framework's --signature-type: how the function is called."""

    HTTP = "http"
    CLOUDEVENT = "cloudevent"


@dataclasses.dataclass
class FunctionServer:
    """One function, `target` in `source`, served on HOST:`port`, its output appended to
    `log`. `env` is the whole environment of the process. Restartable."""

    target: str
    source: Path
    port: int
    log: Path
    env: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ))
    signature: Signature = Signature.HTTP
    proc: subprocess.Popen | None = dataclasses.field(default=None, init=False)
    starts: int = dataclasses.field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def argv(self) -> list[str]:
        return [
            str(FUNCTIONS_FRAMEWORK),
            "--source",
            str(self.source),
            "--target",
            self.target,
            "--signature-type",
            str(self.signature),
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]

    def spawn(self) -> subprocess.Popen:
        """Start the process and return at once (see `wait_listening`)."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
                cwd=Path(self.source).parent,
                env=dict(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.starts += 1
        return self.proc

    def wait_listening(self, timeout: float = 60.0) -> None:
        """Until the port accepts connections (main.py has been imported by then);
        EmulatorError if the process exits first or the time runs out."""
        wait_for_port(self.port, self.proc, f"the {self.target} function", timeout=timeout)

    def start(self, timeout: float = 60.0) -> FunctionServer:
        self.spawn()
        self.wait_listening(timeout)
        return self

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """gunicorn's graceful shutdown, then SIGKILL for anything left (see the module)."""
        if self.proc is not None:
            stop(self.proc.pid, grace, self.proc)

    def kill(self) -> None:
        """SIGKILL the whole group, master and worker: no clean-up code runs. Returns once
        the group is gone, so the port is free for a restart."""
        if self.proc is not None:
            kill(self.proc.pid, self.proc)


def stop(pid: int, grace: float = STOP_GRACE_SECONDS, proc: subprocess.Popen | None = None) -> None:
    """Stop the functions-framework process group led by `pid` (`proc` when it is a child
    of this process): SIGTERM to the master, up to `grace` s for its workers to exit, then
    SIGKILL to the group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and _running(pid, proc) and _workers(pid):
        time.sleep(_POLL_SECONDS)
    kill(pid, proc)


def kill(pid: int, proc: subprocess.Popen | None = None, timeout: float = KILL_WAIT_SECONDS) -> None:
    """SIGKILL the process group led by `pid`; wait (up to `timeout`) until it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    wait_group_gone(pid, timeout, proc)


def _running(pid: int, proc: subprocess.Popen | None) -> bool:
    return proc.poll() is None if proc is not None else alive(pid)


def _workers(pgid: int) -> bool:
    """Whether a process of the group other than its leader still runs. Where /proc cannot
    tell (not Linux), assume so: the stop then waits for the master instead."""
    members = group_members(pgid)
    return members is None or bool(members - {pgid})
