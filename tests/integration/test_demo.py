"""`make demo` end to end: the stack comes up on free ports, two simulated devices stream
the sample, the demo verifies the recordings byte for byte and exits 0; the
`omi-receiver` command works against that stack with its stack.env; `down` stops every
process it started."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omi_receiver.devtools import emulators

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_on_a_private_stack(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")}
    env.update(
        OMI_LOCAL_DIR=str(tmp_path / "local"),
        PUBSUB_PORT=str(emulators.free_port()),
        GCS_PORT=str(emulators.free_port()),
        INGEST_PORT=str(emulators.free_port()),
        ASSEMBLER_PORT=str(emulators.free_port()),
        TICK_SECONDS="1",
    )
    try:
        demo = subprocess.run(
            [sys.executable, "-m", "omi_receiver.devtools.demo", "--speed", "15", "--timeout", "60"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert demo.stdout.count("OK: byte-identical") == 2, demo.stdout
        assert "gs://omi-recordings-local/recordings/demo-current-" in demo.stdout
        pids = [int(line.split()[1]) for line in (tmp_path / "local" / "stack.pids").read_text().splitlines()]
        assert len(pids) == 5
        uid = re.search(r"recordings/(demo-current-[\w-]+)/", demo.stdout).group(1)
        _commands_against_the_stack(env, tmp_path / "local" / "stack.env", uid, tmp_path / "downloads")
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "omi_receiver.devtools.stack", "down"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert "stopped: pubsub, gcs, ingest, assembler, ticker" in down.stdout
    for pid in pids:
        # A process that exited but waits for init to reap it (a zombie) has not survived.
        assert not emulators.alive(pid), f"process {pid} survived `down`"


def _commands_against_the_stack(env: dict, stack_env: Path, uid: str, downloads: Path) -> None:
    """As README says: `set -a; . .local/stack.env; set +a`, then the console script."""
    cli_env = {**env, **dict(line.split("=", 1) for line in stack_env.read_text().splitlines())}
    command = str(Path(sys.executable).parent / "omi-receiver")

    def run(*args: str) -> str:
        done = subprocess.run([command, *args], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    listed = json.loads(run("recordings", "list", "--uid", uid, "--json"))
    assert listed and all(r["uid"] == uid for r in listed)
    assert json.loads(run("recordings", "stats", "--json"))["users"] == 2
    run("recordings", "download", "--uid", uid, "-o", str(downloads), "-q")
    assert sorted(p.name for p in downloads.iterdir()) == sorted(f"{r['id']}.wav" for r in listed)
    assert "no dead letters waiting" in run("dlq", "inspect")
    assert "erased" in run("recordings", "erase", "--uid", uid, "--yes")
    assert json.loads(run("recordings", "stats", "--json"))["users"] == 1
