"""A consumer of finished-recording events served as in production: the function under the
functions-framework CLI, fed by a push subscription on the recordings topic (as Eventarc
feeds it). Shared by the VAD and compaction end-to-end tests."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from omi_receiver.devtools.emulators import free_port
from omi_receiver.devtools.functions import FunctionServer, Signature
from omi_receiver.runtime import clients
from omi_receiver.runtime.config import Config


@contextlib.contextmanager
def served_on_recordings(config: Config, target: str, source: Path, log: Path, env: dict[str, str], name: str):
    """`target` of `source`, pushed to from the subscription `<recordings topic>-<name>`;
    yields the server's log file."""
    server = FunctionServer(target, source, free_port(), log, {**os.environ, **env}, Signature.CLOUDEVENT)
    server.spawn()
    subscriber = clients.subscriber()
    push = config.subscription_path(f"{config.recordings_topic}-{name}")
    try:
        server.wait_listening(timeout=30)
        subscriber.create_subscription(
            request={
                "name": push,
                "topic": config.topic_path(config.recordings_topic),
                "push_config": {"push_endpoint": f"{server.url}/"},
                "ack_deadline_seconds": 60,
            }
        )
        yield server.log
    finally:
        subscriber.delete_subscription(request={"subscription": push})
        server.stop()
