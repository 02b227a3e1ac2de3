"""The dead-letter commands' errors that no emulator can produce: missing credentials,
IAM refusals, missing settings. (Their behaviour is in tests/integration/test_deadletter.py.)"""

from __future__ import annotations

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from omi_receiver.ops.deadletter import DeadLetterError, inspect, replay
from omi_receiver.runtime import clients
from omi_receiver.runtime.config import Config

CONFIG = Config(google_cloud_project="omi-test", recordings_bucket="recordings")
HOLD = "projects/omi-test/subscriptions/audio-chunks-dead-letter-hold"


@pytest.fixture(autouse=True)
def _fresh_clients():
    clients.set_subscriber(None)
    yield
    clients.set_subscriber(None)


def test_no_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    # google.auth.default() reads this first and fails at once when the file is absent.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    with pytest.raises(
        DeadLetterError, match=r"no Google Cloud credentials found: run `gcloud auth application-default login`"
    ):
        inspect(CONFIG)


class Refusing:
    """A subscriber that IAM refuses (the emulator has no IAM)."""

    def pull(self, **kwargs):
        raise exceptions.PermissionDenied("User not authorized to perform this action.")

    def modify_ack_deadline(self, **kwargs):
        raise AssertionError("nothing was pulled")


@pytest.mark.parametrize("call", [inspect, replay])
def test_permission_denied_names_the_subscription_and_the_role(call):
    clients.set_subscriber(Refusing())
    clients.set_chunk_publisher(object())
    clients.set_storage(storage.Client(project="omi-test", credentials=AnonymousCredentials()))  # never called
    try:
        with pytest.raises(DeadLetterError) as caught:
            call(CONFIG)
    finally:
        clients.set_chunk_publisher(None)
        clients.set_storage(None)
    assert str(caught.value).startswith(
        f"permission denied on dead-letter hold subscription {HOLD}: the caller needs roles/pubsub.subscriber"
    )


def test_missing_settings_are_named():
    with pytest.raises(DeadLetterError, match="GOOGLE_CLOUD_PROJECT"):
        inspect(Config())
    with pytest.raises(DeadLetterError, match="RECORDINGS_BUCKET"):
        replay(Config(google_cloud_project="omi-test"))
