"""What every benchmark section shares: machine facts, process CPU, percentiles, result
files, and a private set of emulators on free ports (never the stack's 8080/8081/8085/4443).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PROJECT = "omi-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Hashed into every result so a number can be traced to the exact (possibly uncommitted)
# source. The code whose performance is measured is what is deployed: main.py and the runtime package.
MEASURED_FILES = (
    "main.py",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "omi_receiver" / "runtime").rglob("*.py")),
)


# --- provenance ---------------------------------------------------------------------------


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )

    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", *MEASURED_FILES))
        or bool(git("ls-files", "--others", "--exclude-standard", "--", *MEASURED_FILES)),
        "source_sha256": {
            f: hashlib.sha256((ROOT / f).read_bytes()).hexdigest()[:12] for f in MEASURED_FILES if (ROOT / f).exists()
        },
        "loadavg_at_start": os.getloadavg(),
    }


def write_result(name: str, body: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(body, indent=1, default=str) + "\n")
    return path


def read_result(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


# --- numbers ------------------------------------------------------------------------------


def percentile(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def median(values) -> float:
    return statistics.median(values)


def ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("inf")


# --- process CPU from /proc -----------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (gunicorn master + worker, gcloud wrapper + java)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _stat_fields(pid: int) -> list[str]:
    # Fields after the ")" that closes the command name: state, ppid, ..., utime is the 12th.
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the given live processes, in seconds (10 ms resolution)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# --- private emulators ----------------------------------------------------------------------


class Emulators:
    """Pub/Sub emulator + fake-gcs-server on free ports, logs in a temp dir; a context manager."""

    def __init__(self, gcs: bool = True):
        from omi_receiver.devtools import emulators

        self.tmp = Path(tempfile.mkdtemp(prefix="omi-bench-"))
        self._stack = contextlib.ExitStack()
        self.pubsub = emulators.start_pubsub(emulators.free_port(), PROJECT, self.tmp / "pubsub.log")
        self._stack.callback(self.pubsub.stop)
        self.gcs = None
        if gcs:
            self.gcs = emulators.start_gcs(emulators.free_port(), self.tmp / "gcs.log")
            self._stack.callback(self.gcs.stop)
        self.env = {"PUBSUB_EMULATOR_HOST": self.pubsub.host, "GOOGLE_CLOUD_PROJECT": PROJECT}
        if self.gcs:
            self.env["STORAGE_EMULATOR_HOST"] = f"http://{self.gcs.host}"
        os.environ.update(self.env)  # this process's clients go to the emulators too
        _forget_clients()

    def __enter__(self) -> Emulators:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()
        _forget_clients()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def config(self, **overrides):
        """A Config with fresh resource names, provisioned on these emulators."""
        from omi_receiver.devtools import resources
        from omi_receiver.runtime.config import Config

        tag = uuid.uuid4().hex[:8]
        values = dict(
            google_cloud_project=PROJECT,
            chunks_topic=f"chunks-{tag}",
            chunks_subscription=f"chunks-sub-{tag}",
            dead_letter_topic=f"dead-{tag}",
            recordings_topic=f"recordings-{tag}",
            recordings_bucket=f"recordings-{tag}" if self.gcs else "",
            ingest_tokens="bench-token-0123456789",
        )
        values.update(overrides)
        config = Config(**values)
        resources.provision(config)
        return config


def _forget_clients() -> None:
    """Cached clients point at the previous section's emulators: drop them."""
    from bench import feed
    from omi_receiver.runtime import clients

    for reset in (clients.set_publisher, clients.set_subscriber, clients.set_storage):
        reset(None)
    feed._publisher = None


def wait_http(url: str, timeout: float = 60.0) -> None:
    """Until anything answers HTTP at `url` (functions-framework has imported main.py)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def spawn_function(
    source: str, target: str, port: int, env: dict, log: Path, signature: str = "http"
) -> subprocess.Popen:
    """functions-framework (gunicorn, 1 worker, 4 x CPU threads) in its own process group,
    serving `source` (relative to the repository); `env` added to this process's. Returns
    at once (wait_http); stop it with omi_receiver.devtools.functions.stop(proc.pid)."""
    from omi_receiver.devtools.functions import FunctionServer, Signature

    server = FunctionServer(target, ROOT / source, port, log, {**os.environ, **env}, Signature(signature))
    return server.spawn()
