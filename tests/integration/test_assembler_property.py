"""Property: for any delivery schedule (batches, redeliveries, shuffles, sender retries)
and any kill point, every accepted chunk ends up in the recordings exactly once, in
received_at order, and each recording is a valid WAV. Runs on fake-gcs-server; batches
are handed to flush_user directly, as the pass does after a pull.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from assembly import Clock, KillAt, Killed, audio_of, joined, recordings, stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omi_receiver.runtime.assembler import Assembler


@st.composite
def schedules(draw):
    n = draw(st.integers(1, 10))
    # Seconds between arrivals: bursts (0.01 s), real time (1 s), pauses, session gaps.
    steps = draw(st.lists(st.sampled_from([0.01, 0.01, 1.0, 1.0, 5.0, 200.0]), min_size=n, max_size=n))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=4)))) if n > 1 else []
    batches_idx = [list(range(a, b)) for a, b in zip([0] + cuts, cuts + [n], strict=True)]
    plan = []
    for batch in batches_idx:
        extra = draw(st.lists(st.integers(0, batch[-1]), max_size=3))  # redeliveries (<= this batch)
        order = draw(st.permutations(batch + extra))
        kill = draw(st.one_of(st.none(), st.integers(1, 14)))
        plan.append((order, kill))
    retries = draw(st.lists(st.integers(0, n - 1), max_size=2, unique=True))  # same key, later arrival
    return steps, plan, retries


@pytest.mark.slow
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=schedules())
def test_any_schedule_gives_each_chunk_once_in_order(stack_config, schedule):
    steps, plan, retries = schedule
    uid = f"prop-{uuid.uuid4().hex[:8]}"
    clock = Clock()
    start = clock.now - int(sum(steps) * 1_000_000) - 60 * 1_000_000
    chunks, t = [], start
    for i, step in enumerate(steps):
        t += int(step * 1_000_000)
        chunks.append(dataclasses.replace(stream(uid, 1, start_us=0, seed=i)[0], received_at_us=t))
    retry_copies = {i: dataclasses.replace(chunks[i], received_at_us=chunks[i].received_at_us + 1) for i in retries}

    for order, kill in plan:
        batch = [chunks[i] for i in order] + [retry_copies[i] for i in order if i in retry_copies]
        if kill is not None:
            try:
                Assembler(stack_config, clock=clock, hook=KillAt(kill)).flush_user(uid, batch)
            except Killed:
                clock.advance(stack_config.lease_seconds + 1)  # the lease expires; redelivery
        Assembler(stack_config, clock=clock).flush_user(uid, batch)

    recs = recordings(stack_config, uid)
    assert all("-late-" not in name for name, _, _ in recs)  # batches never went back in time
    assert b"".join(audio_of(blob, 16000) for _, blob, _ in recs) == joined(chunks)
    assert sum(int(meta["chunks"]) for _, _, meta in recs) == len(chunks)
