"""Chunks held for the settle window come back and are assembled on later passes."""

from __future__ import annotations

import dataclasses
import time

from assembly import audio_of, joined, publish, recordings, stream

from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.contract import now_us


def test_fresh_chunks_held_then_assembled_with_the_real_clock(stack_config):
    config = dataclasses.replace(stack_config, settle_seconds=0.5)
    chunks = stream("fresh", 30, start_us=now_us(), step_s=0.01)  # a burst, received just now
    publish(config, chunks[:10])
    assembler = Assembler(config)
    passes = []
    deadline = time.monotonic() + 30
    published_rest = False
    while time.monotonic() < deadline:
        passes.append(assembler.run_pass())
        if not published_rest:
            publish(config, chunks[10:])
            published_rest = True
        recs = recordings(config, "fresh")
        if recs and len(recs[0][1]) - 44 == len(joined(chunks)):
            break
        time.sleep(0.3)
    [(_, blob, _)] = recordings(config, "fresh")
    assert audio_of(blob, 16000) == joined(chunks), [(p.pulled, p.held, p.assembled) for p in passes]
