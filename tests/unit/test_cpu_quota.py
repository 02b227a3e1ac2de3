"""bench/cpu_quota.py: a process tree joins a CPU-limited cgroup before it execs, is held to
its quota, and the group is removed afterwards, also with processes still in it and when the
code using it fails. Needs root and a cgroup cpu controller (the bench machine has both)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import cpu_quota
from bench.cpu_quota import CpuQuota

_why_not = cpu_quota.available()
needs_cgroup = pytest.mark.skipif(_why_not is not None, reason=f"no CPU quota here: {_why_not}")

BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"


def _gone(dirs: list[Path]) -> bool:
    return all(not d.exists() for d in dirs)


def test_rejects_a_quota_out_of_range():
    with pytest.raises(ValueError, match="cpus must be between"):
        CpuQuota(0)


@needs_cgroup
def test_a_wrapped_process_and_its_children_are_held_to_the_quota():
    with CpuQuota(0.1) as quota:
        dirs = list(quota.dirs)
        # A shell that forks two busy children, like gunicorn's master forking its worker.
        code = BUSY.format(seconds=1.0)
        script = f"{sys.executable} -c '{code}' & {sys.executable} -c '{code}' & wait"
        started = time.monotonic()
        proc = subprocess.Popen(quota.wrap(["/bin/sh", "-c", script]))
        time.sleep(0.3)
        members = set(quota.pids())
        proc.wait(timeout=30)
        wall = time.monotonic() - started
        used = quota.usage_seconds()
        throttling = quota.throttling()
    assert proc.pid in members and len(members) >= 3  # the shell and both children
    # Two busy processes for ~1 s would use ~2 CPU-s unlimited; 0.1 CPU allows 0.1 s a second.
    assert used <= 0.1 * wall + 0.15, (used, wall)
    assert throttling["throttled"] > 0 and throttling["throttled_ms"] > 0
    assert _gone(dirs)


@needs_cgroup
def test_close_moves_live_processes_out_and_removes_the_group():
    quota = CpuQuota(0.5)
    dirs = list(quota.dirs)
    proc = subprocess.Popen(quota.wrap(["sleep", "30"]))
    try:
        deadline = time.monotonic() + 5
        while proc.pid not in quota.pids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.pid in quota.pids()
        quota.close()
        assert _gone(dirs)
        assert proc.poll() is None  # still running, now in the parent group
        parent_pids = (dirs[0].parent / "cgroup.procs").read_text().split()
        assert str(proc.pid) in parent_pids
        quota.close()  # a second close is harmless
    finally:
        proc.kill()
        proc.wait()


@needs_cgroup
def test_the_group_is_removed_when_the_code_using_it_fails():
    with pytest.raises(RuntimeError, match="boom"), CpuQuota(0.25) as quota:
        dirs = list(quota.dirs)
        assert _gone(dirs) is False
        raise RuntimeError("boom")
    assert _gone(dirs)
