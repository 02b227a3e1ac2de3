"""The finished-recording event: JSON on the recordings topic, for downstream consumers
(ASR, VAD, embeddings), and its `recording_finalized` log line."""

from __future__ import annotations

import json

from .. import logs
from ..config import Config
from .recording import Recording


class Events:
    def __init__(self, publisher, config: Config):
        self.publisher = publisher
        self.bucket = config.recordings_bucket
        self.topic = config.topic_path(config.recordings_topic)

    def finished(self, uid: str, rec: Recording, late: bool = False) -> None:
        """Publish that `rec` is final; returns once Pub/Sub has it.

        Called before the state commit: a crash in between repeats the event, never loses
        it. Consumers de-duplicate on `name`."""
        event = rec.event(uid, self.bucket, late=late)
        self.publisher.publish(self.topic, json.dumps(event).encode(), uid=uid, name=rec.name).result(timeout=30)
        logs.info(
            "recording_finalized",
            **{k: event[k] for k in ("uid", "uri", "duration_seconds", "bytes", "chunks", "late")},
        )
