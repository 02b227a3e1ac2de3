"""The local stack: both emulators, both functions and the ticker, in the background.

    python -m omi_receiver.devtools.stack up      # or: make up
    python -m omi_receiver.devtools.stack down    # or: make down (stops exactly what `up` started)
    python -m omi_receiver.devtools.stack status

`up` writes .local/stack.env (KEY=VALUE: INGEST_URL, the emulator hosts, bucket, project)
and .local/stack.pids. Ports, the tick and where these files go come from the environment
of `make up` (omi_receiver.devtools.settings), as does every assembler/ingest setting
(e.g. `SESSION_GAP_SECONDS=30 make up`); see README.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omi_receiver.devtools import emulators, functions
from omi_receiver.devtools.settings import CONFIG_DEFAULTS, ROOT, LocalSettings
from omi_receiver.runtime.config import ENV_VARS, Config, ConfigError

# The stack's defaults by variable name (bench/freshness.py measures with them).
LOCAL_DEFAULTS = {**CONFIG_DEFAULTS, "TICK_SECONDS": f"{LocalSettings.tick_seconds:g}"}
FUNCTIONS = ("ingest", "assembler")  # stopped with gunicorn's graceful shutdown


class StackError(RuntimeError):
    pass


@functools.cache
def settings() -> LocalSettings:
    """This process's local settings, read from the environment once."""
    return LocalSettings.from_env()


def _read_pids() -> dict[str, int]:
    pid_file = settings().pid_file
    if not pid_file.exists():
        return {}
    pids = {}
    for line in pid_file.read_text().splitlines():
        name, _, pid = line.partition(" ")
        if pid.isdigit():
            pids[name] = int(pid)
    return pids


def _function_settings() -> dict[str, str]:
    """The functions' settings: the local defaults, then what the environment sets; a fresh
    ingest token unless INGEST_TOKENS is set."""
    values = {**CONFIG_DEFAULTS, **{k: v for k, v in os.environ.items() if k in ENV_VARS}}
    if not values.get("INGEST_TOKENS"):
        values["INGEST_TOKENS"] = secrets.token_urlsafe(24)
    return values


class _Starter:
    """Starts the stack's processes one by one, recording each in the pid file at once, so
    `down` (also after a failed `up`) stops exactly what was started."""

    def __init__(self, local: LocalSettings):
        self.local = local
        self.started: dict[str, int] = {}

    def record(self, name: str, pid: int) -> None:
        self.started[name] = pid
        self.local.pid_file.write_text("".join(f"{n} {p}\n" for n, p in self.started.items()))

    def emulators(self, config: Config) -> dict[str, str]:
        """Start both emulators; the environment that points clients at them."""
        logs = self.local.logs_dir
        pubsub = emulators.start_pubsub(self.local.pubsub_port, config.google_cloud_project, logs / "pubsub.log")
        self.record("pubsub", pubsub.proc.pid)
        gcs = emulators.start_gcs(self.local.gcs_port, logs / "gcs.log")
        self.record("gcs", gcs.proc.pid)
        return {"PUBSUB_EMULATOR_HOST": pubsub.host, "STORAGE_EMULATOR_HOST": f"http://{gcs.host}"}

    def functions(self, env: dict[str, str]) -> None:
        main, logs = ROOT / "main.py", self.local.logs_dir
        servers = {
            "ingest": functions.FunctionServer("receive_chunk", main, self.local.ingest_port, logs / "ingest.log", env),
            "assembler": functions.FunctionServer(
                "assemble_recordings",
                main,
                self.local.assembler_port,
                logs / "assembler.log",
                env,
                functions.Signature.CLOUDEVENT,
            ),
        }
        for name, server in servers.items():
            server.spawn()
            self.record(name, server.pid)
            server.wait_listening(timeout=60)

    def ticker(self, env: dict[str, str], shards: int) -> None:
        with open(self.local.logs_dir / "ticker.log", "ab") as log:
            ticker = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "omi_receiver.devtools.ticker",
                    "--url",
                    f"http://127.0.0.1:{self.local.assembler_port}",
                    "--interval",
                    f"{self.local.tick_seconds:g}",
                    "--shards",
                    str(shards),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                start_new_session=True,
            )
        self.record("ticker", ticker.pid)


def up() -> dict[str, str]:
    """Start the stack; the values written to stack.env."""
    local = settings()
    running = [n for n, p in _read_pids().items() if emulators.alive(p)]
    if running:
        raise StackError(f"the stack is already running ({', '.join(running)}); `make down` first")
    for name, port in local.ports.items():
        emulators.ensure_port_free(port, name.removesuffix("_PORT").lower())
    local.logs_dir.mkdir(parents=True, exist_ok=True)
    values = _function_settings()
    config = Config.from_env(values)  # fails here, naming the variable, if a value is bad
    starter = _Starter(local)
    try:
        hosts = starter.emulators(config)
        os.environ.update(hosts)
        from omi_receiver.devtools import resources

        resources.provision(config)
        env = {**os.environ, **values, **hosts}
        starter.functions(env)
        starter.ticker(env, config.assembler_shards)
    except BaseException:
        down(quiet=True)
        raise
    written = _env_values(local, config, hosts)
    write_env(local.env_file, written)
    return written


def _env_values(local: LocalSettings, config: Config, hosts: dict[str, str]) -> dict[str, str]:
    """What stack.env holds: where to send, and what the `omi-receiver` command needs."""
    return {
        "INGEST_URL": f"http://127.0.0.1:{local.ingest_port}/{config.tokens[0]}",
        "ASSEMBLER_URL": f"http://127.0.0.1:{local.assembler_port}",
        **hosts,
        "RECORDINGS_BUCKET": config.recordings_bucket,
        "GOOGLE_CLOUD_PROJECT": config.google_cloud_project,
        "CHUNKS_TOPIC": config.chunks_topic,
        "CHUNKS_SUBSCRIPTION": config.chunks_subscription,
        "RECORDINGS_TOPIC": config.recordings_topic,
        "DEAD_LETTER_TOPIC": config.dead_letter_topic,
        "ASSEMBLER_SHARDS": str(config.assembler_shards),
        "SESSION_GAP_SECONDS": str(config.session_gap_seconds),
        "TICK_SECONDS": f"{local.tick_seconds:g}",
    }


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
    """Stop what `up` recorded, last started first (the ticker before the assembler it
    ticks, the functions before the emulators they use): the functions with SIGTERM to
    gunicorn's master alone, the rest with SIGTERM to their whole process group; anything
    left after a few seconds with SIGKILL."""
    running = {name: pid for name, pid in _read_pids().items() if emulators.alive(pid)}
    for name, pid in reversed(running.items()):
        if name in FUNCTIONS:
            functions.stop(pid)
        else:
            emulators.stop_process_group(pid)
    stopped = list(running)
    settings().pid_file.unlink(missing_ok=True)
    settings().env_file.unlink(missing_ok=True)
    if not quiet:
        print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
    return stopped


def read_env() -> dict[str, str]:
    env_file = settings().env_file
    if not env_file.exists():
        raise StackError("the local stack is not running: `make up` first")
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


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
    raise StackError(f"ingest did not answer within {timeout:.0f} s; see {settings().logs_dir}/ingest.log")


def show(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _status() -> None:
    pids = _read_pids()
    for name, pid in pids.items():
        print(f"{name:10} pid {pid:7} {'running' if emulators.alive(pid) else 'dead'}")
    if not pids:
        print("the local stack is not running")


def _up() -> None:
    values = up()
    wait_ready(values)
    local = settings()
    print(f"local stack is up (logs in {show(local.logs_dir)}/, settings in {show(local.env_file)}):")
    for key, value in values.items():
        print(f"  {key}={value}")
    print("point a sender at INGEST_URL; `make down` stops everything")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    commands = {"up": _up, "down": down, "status": _status}
    try:
        commands[args.command]()
    except (StackError, emulators.EmulatorError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
