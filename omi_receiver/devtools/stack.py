"""The local stack: both emulators, both functions and the ticker, in the background.

    python -m omi_receiver.devtools.stack up      # or: make up
    python -m omi_receiver.devtools.stack down    # or: make down (stops exactly what `up` started)
    python -m omi_receiver.devtools.stack status

`up` writes .local/stack.env (KEY=VALUE: INGEST_URL, the emulator hosts, bucket, project)
and .local/stack.pids. Ports and every assembler/ingest setting come from the
environment of `make up` (e.g. `SESSION_GAP_SECONDS=30 make up`); see README.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omi_receiver.devtools import emulators
from omi_receiver.runtime.config import ENV_VARS, Config

ROOT = Path(__file__).resolve().parents[2]  # the repository: omi_receiver/devtools/stack.py
# OMI_LOCAL_DIR lets a second stack (e.g. the demo test) keep its files apart.
LOCAL = Path(os.environ.get("OMI_LOCAL_DIR") or ROOT / ".local").resolve()
LOGS = LOCAL / "logs"
ENV_FILE = LOCAL / "stack.env"
PID_FILE = LOCAL / "stack.pids"

PORTS = {  # env var -> default
    "PUBSUB_PORT": 8085,
    "GCS_PORT": 4443,
    "INGEST_PORT": 8080,
    "ASSEMBLER_PORT": 8081,
}
# Local defaults that differ from production: faster ticks, so a shorter settle window.
LOCAL_DEFAULTS = {
    "GOOGLE_CLOUD_PROJECT": "omi-local",
    "RECORDINGS_BUCKET": "omi-recordings-local",
    "SETTLE_SECONDS": "2",
    "TICK_SECONDS": "5",
}


class StackError(RuntimeError):
    pass


def _ports() -> dict[str, int]:
    ports = {}
    for name, default in PORTS.items():
        raw = os.environ.get(name, str(default))
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise StackError(f"{name}={raw!r} is not a port number")
        ports[name] = int(raw)
    if len(set(ports.values())) != len(ports):
        raise StackError(f"ports must differ: {ports}")
    return ports


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pids() -> dict[str, int]:
    if not PID_FILE.exists():
        return {}
    pids = {}
    for line in PID_FILE.read_text().splitlines():
        name, _, pid = line.partition(" ")
        if pid.isdigit():
            pids[name] = int(pid)
    return pids


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(LOGS / f"{name}.log", "ab")
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)


def up() -> dict[str, str]:
    running = {n: p for n, p in _read_pids().items() if _alive(p)}
    if running:
        raise StackError(f"the stack is already running ({', '.join(running)}); `make down` first")
    ports = _ports()
    for name, port in ports.items():
        emulators.ensure_port_free(port, name.removesuffix("_PORT").lower())
    LOGS.mkdir(parents=True, exist_ok=True)
    settings = {**LOCAL_DEFAULTS, **{k: v for k, v in os.environ.items() if k in ENV_VARS or k in LOCAL_DEFAULTS}}
    if not settings.get("INGEST_TOKENS"):
        settings["INGEST_TOKENS"] = secrets.token_urlsafe(24)
    token = settings["INGEST_TOKENS"].split(",")[0].strip()
    config = Config.from_env(settings)  # fails here, naming the variable, if a value is bad

    started: dict[str, int] = {}

    def record(name: str, pid: int) -> None:
        started[name] = pid
        PID_FILE.write_text("".join(f"{n} {p}\n" for n, p in started.items()))

    try:
        pubsub = emulators.start_pubsub(ports["PUBSUB_PORT"], config.google_cloud_project, LOGS / "pubsub.log")
        record("pubsub", pubsub.proc.pid)
        gcs = emulators.start_gcs(ports["GCS_PORT"], LOGS / "gcs.log")
        record("gcs", gcs.proc.pid)
        env = {**os.environ, **settings,
               "PUBSUB_EMULATOR_HOST": pubsub.host, "STORAGE_EMULATOR_HOST": f"http://{gcs.host}"}
        os.environ.update({k: env[k] for k in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")})
        from omi_receiver.devtools import resources

        resources.provision(config)
        ff = str(Path(sys.executable).parent / "functions-framework")
        functions = {
            "ingest": [ff, "--source", "main.py", "--target", "receive_chunk", "--host", "127.0.0.1",
                       "--port", str(ports["INGEST_PORT"])],
            "assembler": [ff, "--source", "main.py", "--target", "assemble_recordings",
                          "--signature-type", "cloudevent", "--host", "127.0.0.1",
                          "--port", str(ports["ASSEMBLER_PORT"])],
        }
        for name, argv in functions.items():
            proc = _spawn(name, argv, env)
            record(name, proc.pid)
            emulators.wait_for_port(ports[f"{name.upper()}_PORT"], proc, f"the {name} function", timeout=60)
        ticker = _spawn("ticker", [sys.executable, "-m", "omi_receiver.devtools.ticker",
                                   "--url", f"http://127.0.0.1:{ports['ASSEMBLER_PORT']}",
                                   "--interval", settings["TICK_SECONDS"]], env)
        record("ticker", ticker.pid)
    except BaseException:
        down(quiet=True)
        raise

    values = {
        "INGEST_URL": f"http://127.0.0.1:{ports['INGEST_PORT']}/{token}",
        "ASSEMBLER_URL": f"http://127.0.0.1:{ports['ASSEMBLER_PORT']}",
        "PUBSUB_EMULATOR_HOST": env["PUBSUB_EMULATOR_HOST"],
        "STORAGE_EMULATOR_HOST": env["STORAGE_EMULATOR_HOST"],
        "RECORDINGS_BUCKET": config.recordings_bucket,
        "GOOGLE_CLOUD_PROJECT": config.google_cloud_project,
        "CHUNKS_TOPIC": config.chunks_topic,
        "CHUNKS_SUBSCRIPTION": config.chunks_subscription,
        "RECORDINGS_TOPIC": config.recordings_topic,
        "DEAD_LETTER_TOPIC": config.dead_letter_topic,
        "ASSEMBLER_SHARDS": str(config.assembler_shards),
        "SESSION_GAP_SECONDS": str(config.session_gap_seconds),
        "TICK_SECONDS": settings["TICK_SECONDS"],
    }
    write_env(ENV_FILE, values)
    return values


def write_env(path: Path, values: dict[str, str]) -> None:
    """INGEST_URL holds the ingest token: the file is its owner's alone from its first
    byte. mkstemp creates it 0600; replacing (not rewriting) an older, wider file also keeps
    the token from whoever already has that one open."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in values.items()))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def down(quiet: bool = False) -> list[str]:
    stopped = []
    for name, pid in _read_pids().items():
        if _alive(pid):
            emulators.stop_process_group(pid)
            stopped.append(name)
    PID_FILE.unlink(missing_ok=True)
    ENV_FILE.unlink(missing_ok=True)
    if not quiet:
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return stopped


def read_env() -> dict[str, str]:
    if not ENV_FILE.exists():
        raise StackError("the local stack is not running: `make up` first")
    return dict(line.split("=", 1) for line in ENV_FILE.read_text().splitlines() if "=" in line)


def wait_ready(values: dict[str, str], timeout: float = 30.0) -> None:
    """Ingest answers (401 without a token) once functions-framework has loaded main.py."""
    import requests

    base = values["INGEST_URL"].rsplit("/", 1)[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.post(base + "/", data=b"", timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise StackError(f"ingest did not answer within {timeout:.0f} s; see {LOGS}/ingest.log")


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            values = up()
            wait_ready(values)
            print(f"local stack is up (logs in {_show(LOGS)}/, settings in {_show(ENV_FILE)}):")
            for key, value in values.items():
                print(f"  {key}={value}")
            print("point a sender at INGEST_URL; `make down` stops everything")
        elif args.command == "down":
            down()
        else:
            pids = _read_pids()
            for name, pid in pids.items():
                print(f"{name:10} pid {pid:7} {'running' if _alive(pid) else 'dead'}")
            if not pids:
                print("the local stack is not running")
    except (StackError, emulators.EmulatorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
