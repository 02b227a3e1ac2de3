"""Shared fixtures: real emulators started once per session, fresh names per test.

`pubsub_emulator` / `gcs_emulator` start the Pub/Sub emulator and fake-gcs-server on free
ports (or reuse ones given by PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST when
TEST_REUSE_EMULATORS=1). `stack_config` gives a Config with uuid-suffixed topics,
subscriptions and bucket, provisioned on the emulators.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from omi_receiver import clients, emulators, resources
from omi_receiver.config import Config

PROJECT = "omi-test"
LOG_DIR = Path(__file__).resolve().parent.parent / ".local" / "test-logs"


@pytest.fixture(autouse=True)
def _restore_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _short_empty_pulls(monkeypatch):
    # The emulator holds an empty pull until the timeout; tests drain often.
    from omi_receiver import assembler

    monkeypatch.setattr(assembler, "PULL_TIMEOUT_SECONDS", 0.7)


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
