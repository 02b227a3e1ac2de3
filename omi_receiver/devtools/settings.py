"""Settings of the local tools (`make up`, the ticker, the demo), read once from environment
variables into one typed object, the way the functions read theirs into `Config`.

Each field's variable is its name upper-cased (PUBSUB_PORT, ..., TICK_SECONDS,
OMI_LOCAL_DIR); README's "Local stack only" lists them. The functions never read these.
`CONFIG_DEFAULTS` are the functions' own settings where the local stack's default differs
from production's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from omi_receiver.runtime.config import ConfigError, env_values

ROOT = Path(__file__).resolve().parents[2]  # the repository: omi_receiver/devtools/settings.py

# Config settings `make up` gives the functions unless its environment sets them: a local
# project and bucket, and a shorter settle window to go with the faster ticks.
CONFIG_DEFAULTS: Mapping[str, str] = {
    "GOOGLE_CLOUD_PROJECT": "omi-local",
    "RECORDINGS_BUCKET": "omi-recordings-local",
    "SETTLE_SECONDS": "2",
}


@dataclasses.dataclass(frozen=True)
class LocalSettings:
    # Ports on 127.0.0.1 of the Pub/Sub emulator, fake-gcs-server and the two functions.
    pubsub_port: int = 8085
    gcs_port: int = 4443
    ingest_port: int = 8080
    assembler_port: int = 8081
    # Seconds between the local ticker's ticks (production: Cloud Scheduler, every minute).
    tick_seconds: float = 5.0
    # Where `make up` keeps stack.env, stack.pids, logs/ and the demo's copies; empty:
    # .local/ in the repository. A second stack (the demo test) keeps its files apart.
    omi_local_dir: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LocalSettings:
        """ConfigError, naming the variable, for a bad value."""
        settings = cls(**env_values(cls, os.environ if environ is None else environ))
        settings._validate()
        return settings

    def _validate(self) -> None:
        for name, port in self.ports.items():
            if not 0 < port < 65536:
                raise ConfigError(f"{name}={port} is not a port number")
        if len(set(self.ports.values())) != len(self.ports):
            raise ConfigError(f"ports must differ: {self.ports}")
        if not self.tick_seconds > 0:
            raise ConfigError("TICK_SECONDS must be positive")

    @property
    def ports(self) -> dict[str, int]:
        """Variable name -> port."""
        return {
            name.upper(): getattr(self, name) for name in ("pubsub_port", "gcs_port", "ingest_port", "assembler_port")
        }

    @property
    def local_dir(self) -> Path:
        return Path(self.omi_local_dir or ROOT / ".local").resolve()

    @property
    def logs_dir(self) -> Path:
        return self.local_dir / "logs"

    @property
    def env_file(self) -> Path:
        """KEY=VALUE lines for senders and the `omi-receiver` command (INGEST_URL, hosts...)."""
        return self.local_dir / "stack.env"

    @property
    def pid_file(self) -> Path:
        """What `make down` stops: one `name pid` line per process group."""
        return self.local_dir / "stack.pids"
