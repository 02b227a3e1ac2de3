"""CHUNK_ENCODING=flac end to end against the real Pub/Sub emulator and fake-gcs-server:
ingest publishes FLAC where it pays, the assembler decodes it, and the recording is
byte-identical to the PCM ingest acknowledged. Messages of older ingest (no `encoding`
attribute) assemble alongside; an unknown encoding is dead-lettered as poison."""

from __future__ import annotations

import time

import pytest
import requests
from assembly import audio_of, drain, joined, publish, recordings, speech_stream
from google.api_core import exceptions
from test_deadletter import spy_on_chunk_topic
from test_ingest_pubsub import OCTET, TOKEN
from test_ingest_pubsub import post as post_request

from omi_receiver.ops.deadletter import inspect
from omi_receiver.runtime import clients, codec, contract
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.codec import Encoding


@pytest.fixture
def spy(stack_config):
    """A second subscription on the chunks topic: sees what was published while the
    assembler consumes its own."""
    return spy_on_chunk_topic(stack_config)


def spied(subscription: str, want: int, within: float = 20.0) -> list:
    """The messages on the spy subscription, in received_at order (acked)."""
    subscriber, found, deadline = clients.subscriber(), [], time.monotonic() + within
    while len(found) < want and time.monotonic() < deadline:
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 100}, timeout=3.0, retry=None
            )
        except exceptions.DeadlineExceeded:
            continue
        found += [m.message for m in response.received_messages]
        if response.received_messages:
            subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
    return sorted(found, key=lambda m: m.attributes["received_at"])


def post(config, chunk: contract.Chunk) -> dict:
    status, answer, _ = post_request(
        config,
        query=f"sample_rate={chunk.sample_rate}&uid={chunk.uid}",
        body=chunk.data,
        headers={"Idempotency-Key": chunk.chunk_id},
    )
    assert status == 200, answer
    return answer


def test_speech_through_ingest_is_published_as_flac_and_assembled_byte_identical(stack_config, spy, clock):
    assert stack_config.encoding is Encoding.FLAC  # the default
    codec.encode(b"\0\0", 16000, wait=True)  # an instance past its first seconds: codec loaded
    chunks = speech_stream("flac", 6, start_us=0, first_second=3)
    tail = contract.Chunk("flac", 16000, 0, "tail", chunks[0].data[:4_410])  # 2,205 samples
    for chunk in [*chunks, tail]:
        assert post(stack_config, chunk)["bytes"] == len(chunk.data)  # the answer counts PCM

    messages = spied(spy, 7)
    assert [m.attributes["chunk_id"] for m in messages] == [c.chunk_id for c in [*chunks, tail]]
    assert {m.attributes[contract.ATTR_ENCODING] for m in messages} == {"flac"}
    published = sum(len(m.data) for m in messages)
    assert published < 0.75 * len(joined([*chunks, tail]))  # ~0.59 on this speech

    clock.advance(5)  # every chunk received before the pass starts
    drain(Assembler(stack_config, clock=clock))
    [(_, blob, meta)] = recordings(stack_config, "flac")
    assert audio_of(blob, 16000) == joined([*chunks, tail])
    assert meta["chunks"] == "7"


def test_older_ingest_messages_without_encoding_assemble_with_flac_ones(stack_config, spy, clock):
    chunks = speech_stream("mixed", 6, start_us=clock.now - 20_000_000, first_second=10)
    publish(stack_config, chunks[:3])  # as older ingest: PCM, no `encoding` attribute
    publish(stack_config, chunks[3:], Encoding.FLAC)  # as ingest now
    messages = spied(spy, 6)
    assert [m.attributes.get(contract.ATTR_ENCODING) for m in messages] == [None] * 3 + ["flac"] * 3
    drain(Assembler(stack_config, clock=clock))
    [(_, blob, _)] = recordings(stack_config, "mixed")
    assert audio_of(blob, 16000) == joined(chunks)


def test_an_unknown_encoding_is_dead_lettered_and_the_rest_assembles(stack_config, clock):
    good = speech_stream("enc", 3, start_us=clock.now - 20_000_000)
    publish(stack_config, [good[0], good[2]], Encoding.FLAC)
    data, attributes = good[1].message(Encoding.FLAC, wait=True)
    clients.publisher().publish(
        stack_config.topic_path(stack_config.chunks_topic), data, **(attributes | {"encoding": "opus"})
    ).result(timeout=30)
    passes = drain(Assembler(stack_config, clock=clock))
    assert sum(p.poison for p in passes) == 1
    [letter] = inspect(stack_config)
    assert (letter.chunk_id, letter.error, letter.replayable) == (good[1].chunk_id, "unknown_encoding", False)
    assert letter.reason.startswith("unknown_encoding: encoding 'opus' is not one of: pcm, flac")
    assert (letter.encoding, letter.bytes, letter.payload_bytes) == ("opus", len(data), len(data))
    [(_, blob, _)] = recordings(stack_config, "enc")
    assert audio_of(blob, 16000) == joined([good[0], good[2]])


def test_a_cold_ingest_server_starts_publishing_flac_once_the_codec_is_loaded(stack_config, spy, serve_ingest):
    """main.py under gunicorn, a fresh process: the first request starts loading soundfile
    on a thread of its own; every chunk decodes to its body, and FLAC follows shortly."""
    base, _ = serve_ingest()
    chunks = speech_stream("cold", 20, start_us=0)
    with requests.Session() as http:
        for chunk in chunks:
            ok = http.post(
                f"{base}/fn/{TOKEN}",
                params={"sample_rate": 16000, "uid": "cold"},
                data=chunk.data,
                headers={"Content-Type": OCTET, "Idempotency-Key": chunk.chunk_id},
                timeout=15,
            )
            assert ok.status_code == 200
            time.sleep(0.1)
    messages = spied(spy, len(chunks))
    assert [contract.Chunk.from_message(m.data, dict(m.attributes)).data for m in messages] == [c.data for c in chunks]
    encodings = [m.attributes[contract.ATTR_ENCODING] for m in messages]
    assert encodings[-1] == "flac", encodings
    assert encodings == sorted(encodings, key=lambda e: e == "flac")  # PCM (if any) only first
