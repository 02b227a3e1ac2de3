"""The publish floor for the ingest benchmark: the least any function can do that answers 200
only once Pub/Sub has the chunk. It reads the body, publishes it with ingest's own Publish RPC
(omi_receiver.runtime.ingest.publisher.DirectPublisher, the same attributes) and answers, with no checks and no
log line. Served like ingest and the floor; it shows how much of ingest's time is the round trip
that every such design pays and how much is ingest's own work."""

import json
import os

import functions_framework

from omi_receiver.runtime.ingest.publisher import DirectPublisher

_TOPIC = f"projects/{os.environ['GOOGLE_CLOUD_PROJECT']}/topics/{os.environ['CHUNKS_TOPIC']}"
_ATTRIBUTES = {
    "uid": "bench-user",
    "sample_rate": "16000",
    "received_at": "2026-01-01T00:00:00.000000Z",
    "chunk_id": "00000000-0000-4000-8000-000000000000",
    "shard": "0",
}
_publisher = None


@functions_framework.http
def receive_chunk(request):
    global _publisher
    if _publisher is None:
        _publisher = DirectPublisher()
    body = request.get_data()
    _publisher.publish(_TOPIC, body, attributes=_ATTRIBUTES, timeout=10)
    return json.dumps({"bytes": len(body)}), 200, {"Content-Type": "application/json"}
