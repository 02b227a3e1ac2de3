"""A CPU quota on a process tree: a cgroup whose CFS bandwidth limit is a fraction of a CPU,
the way a container runtime enforces a fractional vCPU (Cloud Run functions: 0.083-0.583 vCPU).

    with CpuQuota(0.167) as quota:
        proc = subprocess.Popen(quota.wrap(argv))   # joins the group before it execs
        ...
        quota.usage_seconds(), quota.throttling()
    # the group is gone here (its leftover processes moved to the parent group)

The process joins the group itself, before `exec` (`wrap`): whatever it forks later (the
gunicorn worker) is born inside the group, and the CPU of processes that have exited stays
counted. cgroup v1 (separate `cpu` and `cpuacct` hierarchies, as on this bench machine) and
cgroup v2 (`cpu.max`, `cpu.stat`) are both handled; anything else raises QuotaUnavailable.
Needs root (or a delegated cgroup).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
import uuid
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# The CFS period: Linux's and Kubernetes' default. With a quota of q CPUs a process may run
# q * 100 ms in every 100 ms, then waits for the next period.
PERIOD_US = 100_000
_RMDIR_TRIES = 50


class QuotaUnavailable(RuntimeError):
    """No writable cgroup with a cpu controller here (not root, or no cgroup cpu controller)."""


def _own_path(controller: str) -> str:
    """This process's cgroup path in the hierarchy of `controller` ('' for cgroup v2)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    return "/"


def _v1_dir(controller: str) -> Path | None:
    """Where `controller`'s v1 hierarchy is mounted (cpu may share a mount with cpuacct)."""
    for name in (controller, "cpu,cpuacct", "cpuacct,cpu"):
        base = CGROUP_ROOT / name
        if (base / "cgroup.procs").exists():
            return base / _own_path(controller).lstrip("/")
    return None


def _v2_dir() -> Path | None:
    controllers = CGROUP_ROOT / "cgroup.controllers"
    if controllers.exists() and "cpu" in controllers.read_text().split():
        return CGROUP_ROOT / _own_path("").lstrip("/")
    return None


def available() -> str | None:
    """None if a quota can be set here, else why not (for a test's skip reason)."""
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    if not (_v1_dir("cpu") or _v2_dir()):
        return f"no cgroup cpu controller under {CGROUP_ROOT}"
    return None


class CpuQuota:
    """A fresh cgroup limited to `cpus` CPUs (None: no limit, only accounting). A context
    manager; `close` removes the group, also when processes are left in it."""

    def __init__(self, cpus: float | None, tag: str = "omi-bench"):
        if cpus is not None and not 0.01 <= cpus <= 64:
            raise ValueError(f"cpus must be between 0.01 and 64, got {cpus!r}")
        reason = available()
        if reason:
            raise QuotaUnavailable(reason)
        self.cpus = cpus
        name = f"{tag}-{uuid.uuid4().hex[:8]}"
        self.v2 = _v1_dir("cpu") is None
        self.dirs: list[Path] = []
        try:
            if self.v2:
                parent = _v2_dir()
                if "cpu" not in (parent / "cgroup.subtree_control").read_text().split():
                    (parent / "cgroup.subtree_control").write_text("+cpu")
                self._make(parent / name)
                self._cpu = self._acct = self.dirs[0]
                quota = "max" if cpus is None else str(round(cpus * PERIOD_US))
                (self._cpu / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                self._cpu = self._make(_v1_dir("cpu") / name)
                acct = _v1_dir("cpuacct")
                self._acct = self._cpu if acct == _v1_dir("cpu") else self._make(acct / name)
                (self._cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self._cpu / "cpu.cfs_quota_us").write_text("-1" if cpus is None else str(round(cpus * PERIOD_US)))
        except OSError as exc:
            self.close()
            raise QuotaUnavailable(f"cannot set up a cgroup: {exc}") from exc

    def _make(self, path: Path) -> Path:
        path.mkdir()
        self.dirs.append(path)
        return path

    def __enter__(self) -> CpuQuota:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def wrap(self, argv: list[str]) -> list[str]:
        """`argv` run by a shell that first moves itself into the group, then execs it (same pid)."""
        joins = " && ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in self.dirs)
        return ["/bin/sh", "-c", f'{joins} && exec "$@"', "sh", *argv]

    def pids(self) -> list[int]:
        return [int(p) for p in (self.dirs[0] / "cgroup.procs").read_text().split()] if self.dirs else []

    def usage_seconds(self) -> float:
        """CPU time of every process that has run in the group, exited ones included."""
        if self.v2:
            return _keyed(self._acct / "cpu.stat")["usage_usec"] / 1e6
        return int((self._acct / "cpuacct.usage").read_text()) / 1e9

    def throttling(self) -> dict:
        """CFS periods the group ran in, how many of them hit the quota, and the time it waited."""
        stat = _keyed(self._cpu / "cpu.stat")
        waited_us = stat["throttled_usec"] if self.v2 else stat["throttled_time"] / 1000
        return {"periods": stat["nr_periods"], "throttled": stat["nr_throttled"], "throttled_ms": waited_us / 1000}

    def close(self) -> None:
        """Move what is still in the group to the parent group, then remove the group."""
        for path in reversed(self.dirs):
            for _ in range(_RMDIR_TRIES):
                with contextlib.suppress(OSError):
                    for pid in (path / "cgroup.procs").read_text().split():
                        with contextlib.suppress(OSError):  # it may have exited meanwhile
                            (path.parent / "cgroup.procs").write_text(pid)
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY: a task was still leaving
                    time.sleep(0.02)
            else:
                raise RuntimeError(f"could not remove cgroup {path}")
        self.dirs = []


def _keyed(path: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in path.read_text().splitlines() if line.strip())}
