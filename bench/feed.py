"""Chunks straight into the chunks topic, as ingest would publish them (same contract, same
encoding: FLAC when CHUNK_ENCODING=flac and it pays, codec.py)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from google.cloud import pubsub_v1

from omi_receiver.devtools.simulate.wavfile import read_wav
from omi_receiver.runtime import codec
from omi_receiver.runtime.contract import ATTR_ENCODING, ATTR_SHARD, Chunk, shard_of

SPEECH = Path(__file__).resolve().parent.parent / "samples" / "speech-16k.wav"

_publisher: pubsub_v1.PublisherClient | None = None


def publisher() -> pubsub_v1.PublisherClient:
    global _publisher
    if _publisher is None:
        # As ingest publishes: no ordering key (no subscription orders; the assembler sorts).
        _publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=500, max_bytes=9_000_000, max_latency=0.05),
        )
    return _publisher


@functools.cache
def speech_seconds(rate: int, encoding: codec.Encoding) -> tuple[tuple[bytes, bytes, codec.Encoding], ...]:
    """Each whole second of the sample speech as (pcm, payload, encoding), encoded once:
    with FLAC the payload's size and the assembler's decoding depend on the content, so
    it is real speech, cycled (read at `rate` whatever its own)."""
    pcm = read_wav(SPEECH)[0]
    size = rate * 2
    seconds = [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]
    out = []
    for second in seconds:
        payload, used = (second, codec.Encoding.PCM)
        if encoding is codec.Encoding.FLAC:
            payload, used = codec.encode(second, rate, wait=True)
        out.append((second, payload, used))
    return tuple(out)


def minute_of_audio(uids: list[str], config, start_us: int, chunks: int = 60, rate: int = 16000) -> int:
    """Publish `chunks` 1-second chunks of speech per uid, received 1 s apart from `start_us`,
    each to its uid's shard topic and encoded as ingest does (config.encoding); returns the
    bytes of audio (PCM) they carry."""
    speech = speech_seconds(rate, config.encoding)
    futures, audio = [], 0
    for i in range(chunks):
        received = start_us + (i + 1) * 1_000_000
        pcm, payload, used = speech[i % len(speech)]
        for uid in uids:
            shard = shard_of(uid, config.assembler_shards)
            chunk = Chunk(uid, rate, received, os.urandom(8).hex(), pcm)
            # chunk.message(config.encoding, shard) would encode each copy again: same result.
            attributes = chunk.attributes() | {ATTR_ENCODING: used.value, ATTR_SHARD: str(shard)}
            futures.append(publisher().publish(config.topic_path(config.shard_topic(shard)), payload, **attributes))
            audio += len(pcm)
    for future in futures:
        future.result(timeout=120)
    return audio


def now_minute_us() -> int:
    """Now, rounded down to a whole minute (readable timestamps in object names)."""
    from omi_receiver.runtime.contract import now_us

    return now_us() // 60_000_000 * 60_000_000
