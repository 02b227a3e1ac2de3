"""Shared fixtures: real emulators started once per session, fresh names per test.

`pubsub_emulator` / `gcs_emulator` start the Pub/Sub emulator and fake-gcs-server on free
ports (or reuse ones given by PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST when
TEST_REUSE_EMULATORS=1). `stack_config` gives a Config with uuid-suffixed topics,
subscriptions and bucket, provisioned on the emulators.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from omi_receiver.devtools import emulators, resources
from omi_receiver.devtools.functions import FunctionServer
from omi_receiver.runtime import clients
from omi_receiver.runtime.config import Config

PROJECT = "omi-test"
ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / ".local" / "test-logs"
# The VAD example consumer is a source of its own (examples/vad), imported as its main.py does.
sys.path.insert(0, str(ROOT / "examples" / "vad"))


@pytest.fixture(autouse=True)
def _restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _fresh_rejection_log(monkeypatch):
    # Ingest bounds its refusal log lines per instance; each test starts a fresh instance.
    from omi_receiver.runtime.ingest import handler
    from omi_receiver.runtime.ingest.rejections import RejectionLog

    monkeypatch.setattr(handler, "_rejections", RejectionLog(flush_at_exit=False))


@pytest.fixture(autouse=True)
def _short_empty_pulls(monkeypatch):
    # The emulator holds an empty pull until the timeout; tests drain often.
    from omi_receiver.runtime.assembler import subscription

    monkeypatch.setattr(subscription, "PULL_TIMEOUT_SECONDS", 0.7)


@pytest.fixture(scope="session")
def pubsub_emulator():
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    emulator = emulators.start_pubsub(emulators.free_port(), PROJECT, LOG_DIR / "pubsub.log")
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    yield emulator.host
    emulator.stop()


@pytest.fixture(scope="session")
def gcs_emulator():
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    emulator = emulators.start_gcs(emulators.free_port(), LOG_DIR / "gcs.log")
    yield f"http://{emulator.host}"
    emulator.stop()


@pytest.fixture
def emulator_env(pubsub_emulator, gcs_emulator, monkeypatch):
    """Point every client at the emulators; fresh client objects per test."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    clients.set_publisher(None)
    clients.set_subscriber(None)
    clients.set_storage(None)
    yield
    clients.set_publisher(None)
    clients.set_subscriber(None)
    clients.set_storage(None)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def stack_config(emulator_env) -> Config:
    """A provisioned set of uuid-suffixed resources; fast timings for tests."""
    config = Config(
        google_cloud_project=PROJECT,
        chunks_topic=unique("chunks"),
        ingest_tokens="test-token-a,test-token-b",
        recordings_bucket=unique("recordings"),
        chunks_subscription=unique("chunks-sub"),
        dead_letter_topic=unique("dead-letter"),
        recordings_topic=unique("recordings"),
        settle_seconds=0.0,
        pass_seconds=20.0,
        lease_seconds=150,
        publish_timeout_seconds=5.0,
    )
    resources.provision(config)
    return config


@pytest.fixture
def serve_ingest(stack_config, tmp_path):
    """Start main.py's receive_chunk under the real functions-framework CLI (gunicorn, as in
    production), pointed at the emulators and `stack_config`'s topic. Call it with settings
    as environment variables; returns (base URL, log path). Stopped after the test."""
    servers: list[FunctionServer] = []

    def start(**settings: str) -> tuple[str, Path]:
        port = emulators.free_port()
        env = {
            **os.environ,
            "GOOGLE_CLOUD_PROJECT": stack_config.google_cloud_project,
            "CHUNKS_TOPIC": stack_config.chunks_topic,
            "INGEST_TOKENS": stack_config.ingest_tokens,
            **settings,
        }
        server = FunctionServer("receive_chunk", ROOT / "main.py", port, tmp_path / f"ingest-{port}.log", env)
        servers.append(server)
        server.start(timeout=30)
        return server.url, server.log

    yield start
    for server in servers:
        server.stop()
