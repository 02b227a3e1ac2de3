"""Chunks straight into the chunks topic, as ingest would publish them (same contract)."""

from __future__ import annotations

import os

from google.cloud import pubsub_v1

from omi_receiver.runtime.contract import ATTR_SHARD, Chunk, shard_of

_publisher: pubsub_v1.PublisherClient | None = None


def publisher() -> pubsub_v1.PublisherClient:
    global _publisher
    if _publisher is None:
        # As ingest publishes: no ordering key (no subscription orders; the assembler sorts).
        _publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_bytes=9_000_000, max_latency=0.05),
        )
    return _publisher


def minute_of_audio(uids: list[str], config, start_us: int, chunks: int = 60, rate: int = 16000) -> int:
    """Publish `chunks` 1-second chunks per uid, received 1 s apart from `start_us`, each to
    its uid's shard topic as ingest does; returns their bytes."""
    body = os.urandom(rate * 2)  # content does not matter to cost or speed
    futures = []
    for i in range(chunks):
        received = start_us + (i + 1) * 1_000_000
        for uid in uids:
            shard = shard_of(uid, config.assembler_shards)
            chunk = Chunk(uid, rate, received, os.urandom(8).hex(), body)
            futures.append(
                publisher().publish(
                    config.topic_path(config.shard_topic(shard)),
                    chunk.data,
                    **chunk.attributes(),
                    **{ATTR_SHARD: str(shard)},
                )
            )
    for future in futures:
        future.result(timeout=120)
    return len(futures) * len(body)


def now_minute_us() -> int:
    """Now, rounded down to a whole minute (readable timestamps in object names)."""
    from omi_receiver.runtime.contract import now_us

    return now_us() // 60_000_000 * 60_000_000
