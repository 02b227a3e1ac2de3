"""What the soak runs against: the emulators (its own on free ports, or the test session's),
uuid-tagged resources provisioned by the code under test, the functions' environment, and the
soak's own direct view of them for verification (storage, open recordings, subscriptions)."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.soak.settings import PROJECT, Settings
from omi_receiver.devtools import emulators
from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler.recording import STATE_PREFIX
from omi_receiver.runtime.config import Config

CLIENT_ENV = ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")

# Run by the code under test, so that its resources.py decides ordering, dead-letter policy...
PROVISION = """
import sys
from omi_receiver.devtools import resources
from omi_receiver.runtime.config import Config
config = Config.from_env()
assert config.ack_deadline_seconds == int(sys.argv[1]), "ACK_DEADLINE_SECONDS must reach the code"
resources.provision(config)
"""


@dataclasses.dataclass(frozen=True)
class Hosts:
    pubsub: str  # host:port
    gcs: str  # http://host:port


def start_emulators(
    given: tuple[str | None, str | None], workdir: Path, on_cleanup: Callable[[Callable[[], None]], None]
) -> Hosts:
    """The emulators given, else new ones on free ports (stopped at clean-up)."""
    pubsub_host, gcs_url = given
    if pubsub_host is None:
        pubsub = emulators.start_pubsub(emulators.free_port(), PROJECT, workdir / "pubsub.log")
        on_cleanup(pubsub.stop)
        pubsub_host = pubsub.host
    if gcs_url is None:
        gcs = emulators.start_gcs(emulators.free_port(), workdir / "gcs.log")
        on_cleanup(gcs.stop)
        gcs_url = f"http://{gcs.host}"
    return Hosts(pubsub_host, gcs_url)


def point_clients(hosts: Hosts | None) -> None:
    """This process's clients to `hosts` (None: forget the cached clients only)."""
    if hosts is not None:
        os.environ.update(
            PUBSUB_EMULATOR_HOST=hosts.pubsub, STORAGE_EMULATOR_HOST=hosts.gcs, GOOGLE_CLOUD_PROJECT=PROJECT
        )
    clients.set_publisher(None)
    clients.set_subscriber(None)
    clients.set_storage(None)


def soak_config(s: Settings, tag: str) -> Config:
    """Resource names ending in `tag` and the soak's assembler settings."""
    return Config(
        google_cloud_project=PROJECT,
        chunks_topic=f"soak-chunks-{tag}",
        chunks_subscription=f"soak-chunks-sub-{tag}",
        dead_letter_topic=f"soak-dead-letter-{tag}",
        recordings_topic=f"soak-recordings-{tag}",
        recordings_bucket=f"soak-recordings-{tag}",
        ingest_tokens=secrets.token_urlsafe(18),
        session_gap_seconds=s.session_gap,
        max_recording_seconds=s.max_recording,
        settle_seconds=s.settle,
        pass_seconds=s.pass_seconds,
        lease_seconds=s.lease_seconds,
        ack_deadline_seconds=s.ack_deadline,
    )


def function_env(s: Settings, config: Config, pubsub_host: str) -> dict[str, str]:
    """Both functions' environment: this process's, without its emulator hosts, plus the
    soak's settings. Storage (STORAGE_EMULATOR_HOST) is set per function."""
    base = {k: v for k, v in os.environ.items() if k not in ("STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")}
    return {
        **base,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "PUBSUB_EMULATOR_HOST": pubsub_host,
        "CHUNKS_TOPIC": config.chunks_topic,
        "CHUNKS_SUBSCRIPTION": config.chunks_subscription,
        "DEAD_LETTER_TOPIC": config.dead_letter_topic,
        "RECORDINGS_TOPIC": config.recordings_topic,
        "RECORDINGS_BUCKET": config.recordings_bucket,
        "INGEST_TOKENS": config.ingest_tokens,
        "SESSION_GAP_SECONDS": str(s.session_gap),
        "MAX_RECORDING_SECONDS": str(s.max_recording),
        "SETTLE_SECONDS": str(s.settle),
        "PASS_SECONDS": str(s.pass_seconds),
        "LEASE_SECONDS": str(s.lease_seconds),
        "ACK_DEADLINE_SECONDS": str(s.ack_deadline),
        "PYTHONUNBUFFERED": "1",
    }


def provision(s: Settings, env: dict[str, str], gcs_url: str) -> None:
    """Topics, subscriptions and bucket, created by the code under test (its resources.py),
    with the soak's own, shorter ack deadline."""
    subprocess.run(
        [sys.executable, "-c", PROVISION, str(s.ack_deadline)],
        cwd=s.code,
        check=True,
        timeout=120,
        env={**env, "STORAGE_EMULATOR_HOST": gcs_url},
    )


def bucket(gcs_url: str, name: str):
    """The recordings bucket read from fake-gcs-server directly (not through the fault proxy)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=PROJECT, credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_url}
    )
    return client.bucket(name)


def open_states(recordings) -> tuple[int, int]:
    """(users with state, users with an open recording) in the bucket."""
    users = opened = 0
    for blob in recordings.list_blobs(prefix=STATE_PREFIX):
        users += 1
        opened += (blob.metadata or {}).get("open") == "1"
    return users, opened


def drain_subscription(subscriber, path: str, limit: int = 100_000, timeout: float = 3.0) -> list:
    """Pull and ack everything waiting (bounded); returns the messages."""
    from google.api_core import exceptions as api_exceptions

    messages = []
    deadline = time.monotonic() + 120
    while len(messages) < limit and time.monotonic() < deadline:
        try:
            response = subscriber.pull(
                request={"subscription": path, "max_messages": 1000}, timeout=timeout, retry=None
            )
        except (api_exceptions.DeadlineExceeded, api_exceptions.ServiceUnavailable):
            break
        if not response.received_messages:
            break
        messages += [m.message for m in response.received_messages]
        subscriber.acknowledge(
            request={"subscription": path, "ack_ids": [m.ack_id for m in response.received_messages]}
        )
    return messages
