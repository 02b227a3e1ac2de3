"""The assembler against the real Pub/Sub emulator and fake-gcs-server.

Each test publishes chunks as ingest does, runs passes, and checks every recording is
byte-identical to the accepted chunks in received_at order, each once, and a valid WAV.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading

import pytest
from assembly import (
    KillAt,
    Killed,
    NothingWaiting,
    PullSpy,
    audio_of,
    drain,
    joined,
    publish,
    recordings,
    stream,
)
from google.api_core import exceptions

from omi_receiver.devtools import resources
from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler import Assembler, LeaseBusy
from omi_receiver.runtime.contract import Chunk

HOUR_US = 3600 * 1_000_000


def make(config, clock, **kw):
    return Assembler(config, clock=clock, **kw)


def test_one_stream_becomes_one_recording(stack_config, clock):
    chunks = stream("alice", 12, start_us=clock.now - 20 * 1_000_000)
    publish(stack_config, chunks)
    drain(make(stack_config, clock))
    [(name, blob, meta)] = recordings(stack_config, "alice")
    assert name.startswith("recordings/alice/") and name.endswith(".wav")
    assert audio_of(blob, 16000) == joined(chunks)
    assert meta["chunks"] == "12" and meta["sample_rate"] == "16000" and meta["status"] == "open"
    assert float(meta["duration_seconds"]) == 12.0


def test_single_chunk_8k(stack_config, clock):
    chunks = stream("eight", 1, rate=8000, start_us=clock.now - HOUR_US)
    publish(stack_config, chunks)
    drain(make(stack_config, clock))
    [(_, blob, meta)] = recordings(stack_config, "eight")
    assert audio_of(blob, 8000) == joined(chunks)
    assert meta["sample_rate"] == "8000"


def test_duplicates_are_dropped(stack_config, clock):
    chunks = stream("dup", 6, start_us=clock.now - HOUR_US)
    # Pub/Sub redelivery and a sender retry (same Idempotency-Key, later received_at).
    retry = dataclasses.replace(chunks[2], received_at_us=chunks[2].received_at_us + 300_000)
    publish(stack_config, chunks + [chunks[1], retry, chunks[5]])
    passes = drain(make(stack_config, clock))
    [(_, blob, _)] = recordings(stack_config, "dup")
    assert audio_of(blob, 16000) == joined(chunks)
    assert sum(p.duplicates for p in passes) == 3
    # And duplicates arriving in a later pass, after the first copy was committed.
    publish(stack_config, chunks[:3])
    drain(make(stack_config, clock))
    [(_, blob, _)] = recordings(stack_config, "dup")
    assert audio_of(blob, 16000) == joined(chunks)


def test_shuffled_delivery_is_put_in_received_order(stack_config, clock):
    chunks = stream("shuffle", 20, start_us=clock.now - HOUR_US)
    shuffled = chunks[:]
    random.Random(7).shuffle(shuffled)
    publish(stack_config, shuffled)
    drain(make(stack_config, clock))
    [(_, blob, _)] = recordings(stack_config, "shuffle")
    assert audio_of(blob, 16000) == joined(chunks)


def test_settle_window_holds_recent_chunks_for_the_next_pass(stack_config, clock):
    config = dataclasses.replace(stack_config, settle_seconds=30)
    chunks = stream("settle", 10, start_us=clock.now - 10 * 1_000_000)  # received in the last 10 s
    early, delayed = chunks[:7], chunks[7:]
    publish(config, [early[0], delayed[0]] + early[1:] + delayed[1:])  # out of order
    first = make(config, clock).run_pass()
    assert first.held == 10 and recordings(config, "settle") == []
    assert first.seconds < config.pass_seconds / 2  # only fresh chunks left: the pass ends
    clock.advance(31)
    drain(make(config, clock))
    [(_, blob, _)] = recordings(config, "settle")
    assert audio_of(blob, 16000) == joined(chunks)


def test_late_chunk_beyond_the_window_gets_its_own_recording(stack_config, clock):
    chunks = stream("late", 8, start_us=clock.now - HOUR_US)
    straggler = chunks.pop(3)
    publish(stack_config, chunks)
    drain(make(stack_config, clock))
    publish(stack_config, [straggler])
    passes = drain(make(stack_config, clock))
    assert sum(p.late for p in passes) == 1
    recs = recordings(stack_config, "late")
    [main] = [r for r in recs if "-late-" not in r[0]]
    [late] = [r for r in recs if "-late-" in r[0]]
    assert audio_of(main[1], 16000) == joined(chunks)
    assert audio_of(late[1], 16000) == straggler.data
    assert late[2]["late"] == "true" and late[2]["chunk_id"] == straggler.chunk_id
    # Its redelivery is still a duplicate, not a second late file.
    publish(stack_config, [straggler])
    drain(make(stack_config, clock))
    assert len(recordings(stack_config, "late")) == 2


def test_gap_split_and_finalization_event(stack_config, clock):
    start = clock.now - 220 * 1_000_000
    first = stream("gap", 5, start_us=start)
    second = stream("gap", 4, start_us=first[-1].received_at_us + 200 * 1_000_000, seed=1)
    publish(stack_config, first + second)
    drain(make(stack_config, clock))
    recs = recordings(stack_config, "gap")
    assert [audio_of(b, 16000) for _, b, _ in recs] == [joined(first), joined(second)]
    assert [m["status"] for _, _, m in recs] == ["final", "open"]
    # The second goes idle for longer than the session gap: a later tick finalizes it.
    clock.advance(stack_config.session_gap_seconds + 15)
    assembler = make(stack_config, clock)
    # The first pass drains (marking every chunk so far as committed); the next one,
    # judging idleness against that drain, finalizes.
    assert [assembler.run_pass().finalized for _ in range(2)] == [0, 1]
    recs = recordings(stack_config, "gap")
    assert [m["status"] for _, _, m in recs] == ["final", "final"]
    events = pull_events(stack_config, 2)
    assert sorted(e["name"] for e in events) == [n for n, _, _ in recs]
    for event in events:
        assert event["uri"] == f"gs://{stack_config.recordings_bucket}/{event['name']}"
        assert event["sample_rate"] == 16000 and event["bytes"] in (5 * 32000, 4 * 32000)
    # Nothing temporary is left once both are final.
    leftovers = [
        b.name for b in clients.storage_client().list_blobs(stack_config.recordings_bucket, prefix="work/gap/")
    ]
    assert leftovers == []


def test_finalizing_clears_what_a_killed_clean_up_left(stack_config, clock):
    """A pass killed between a finalization's commit and its clean-up leaves the recording's
    work/ objects; nothing points at them any more. The user's next finalization takes them."""

    def work_objects():
        return [
            b.name for b in clients.storage_client().list_blobs(stack_config.recordings_bucket, prefix="work/tidy/")
        ]

    def kill_at_clean_up(step):
        if step == "delete_prefix":
            raise Killed("killed after the finalization's commit")

    first = stream("tidy", 3, start_us=clock.now - 600 * 1_000_000)
    make(stack_config, clock).flush_user("tidy", first)
    clock.advance(stack_config.session_gap_seconds + 15)
    killed = make(stack_config, clock, hook=kill_at_clean_up)
    assert killed.run_pass().finalized == 0  # drains: the next pass judges idleness against it
    with pytest.raises(Killed):
        killed.run_pass()
    assert work_objects(), "the killed clean-up left the first recording's work/ objects"

    second = stream("tidy", 2, start_us=clock.now - 30 * 1_000_000, seed=1)
    make(stack_config, clock).flush_user("tidy", second)
    clock.advance(stack_config.lease_seconds + stack_config.ack_deadline_seconds + 60)  # past the dead pass
    assembler = make(stack_config, clock)
    assert sum(assembler.run_pass().finalized for _ in range(2)) == 1
    recs = recordings(stack_config, "tidy")
    assert [audio_of(b, 16000) for _, b, _ in recs] == [joined(first), joined(second)]
    assert [m["status"] for _, _, m in recs] == ["final", "final"]
    assert work_objects() == []


def test_pauses_shorter_than_the_gap_stay_in_one_recording(stack_config, clock):
    start = clock.now - HOUR_US
    burst1 = stream("bursty", 10, start_us=start, step_s=0.01)  # 10 s of audio in a burst
    burst2 = stream("bursty", 10, start_us=burst1[-1].received_at_us + 10 * 1_000_000, step_s=0.01, seed=2)
    publish(stack_config, burst1 + burst2)
    drain(make(stack_config, clock))
    [(_, blob, meta)] = recordings(stack_config, "bursty")
    assert audio_of(blob, 16000) == joined(burst1 + burst2)
    assert meta["gaps"] == "0"  # bursts are not pauses


def test_sample_rate_change_splits(stack_config, clock):
    start = clock.now - HOUR_US
    a = stream("rate", 3, rate=16000, start_us=start)
    b = stream("rate", 3, rate=8000, start_us=a[-1].received_at_us, seed=3)
    publish(stack_config, a + b)
    drain(make(stack_config, clock))
    recs = recordings(stack_config, "rate")
    assert [(audio_of(blob, int(m["sample_rate"])), m["sample_rate"]) for _, blob, m in recs] == [
        (joined(a), "16000"),
        (joined(b), "8000"),
    ]


def test_max_duration_splits(stack_config, clock):
    config = dataclasses.replace(stack_config, max_recording_seconds=5)
    chunks = stream("long", 12, start_us=clock.now - HOUR_US)
    publish(config, chunks)
    drain(make(config, clock))
    recs = recordings(config, "long")
    assert [audio_of(b, 16000) for _, b, _ in recs] == [joined(chunks[:5]), joined(chunks[5:10]), joined(chunks[10:])]


def test_many_users_at_once(stack_config, clock):
    start = clock.now - HOUR_US
    streams = {
        f"user{i}": stream(f"user{i}", 8, rate=8000 if i % 2 else 16000, start_us=start, seed=i) for i in range(12)
    }
    mixed = [c for group in zip(*streams.values(), strict=True) for c in group]
    publish(stack_config, mixed)
    drain(make(stack_config, clock))
    for uid, chunks in streams.items():
        [(_, blob, _)] = recordings(stack_config, uid)
        assert audio_of(blob, chunks[0].sample_rate) == joined(chunks)


def test_appending_composes_and_never_downloads_the_recording(stack_config, clock):
    assembler = make(stack_config, clock)
    chunks = stream("flat", 30, start_us=clock.now - 40 * 1_000_000)
    passes = []
    for i in range(0, 30, 10):
        publish(stack_config, chunks[i : i + 10])
        passes += drain(assembler)
    flushes = sum(p.flushes for p in passes)
    assert flushes == 3
    # Per pass: take and release the shard lease (1 read, 2 writes). Per flush: user lease,
    # part, (data compose), header, WAV compose, commit: at most 6 writes, 1 read.
    writes = sum(p.storage["uploads"] + p.storage["composes"] for p in passes) - 2 * len(passes)
    reads = sum(p.storage["reads"] for p in passes) - len(passes)
    assert writes <= 6 * flushes
    assert reads == flushes  # the state object only; never audio
    [(_, blob, _)] = recordings(stack_config, "flat")
    assert audio_of(blob, 16000) == joined(chunks)


def test_poison_messages_are_dead_lettered_and_do_not_block(stack_config, clock):
    publisher = clients.publisher()
    topic = stack_config.topic_path(stack_config.chunks_topic)
    good = stream("fine", 3, start_us=clock.now - HOUR_US)
    bad = good[0].attributes() | {"chunk_id": "odd"}
    publisher.publish(topic, b"\x01\x02\x03", **bad).result()
    publisher.publish(topic, b"\x00\x00", sample_rate="16000").result()
    publish(stack_config, good)
    passes = drain(make(stack_config, clock))
    assert sum(p.poison for p in passes) == 2
    [(_, blob, _)] = recordings(stack_config, "fine")
    assert audio_of(blob, 16000) == joined(good)
    subscriber = clients.subscriber()
    hold = stack_config.subscription_path(stack_config.dead_letter_hold_subscription)
    got = pull_all(subscriber, hold, 2)
    assert sorted(m.message.attributes["error"] for m in got) == ["missing_attributes", "odd_length"]


def test_two_concurrent_passes_on_one_user(stack_config, clock):
    """Two passes hold the same user's messages at once, as when one outlived its ack
    deadline and the batch was redelivered to the other: both try the same batch. One wins,
    the other is deferred and later finds only duplicates."""
    chunks = stream("race", 10, start_us=clock.now - 30 * 1_000_000)
    make(stack_config, clock).flush_user("race", chunks[:4])
    batch = chunks[4:]
    passes = [make(stack_config, clock) for _ in range(2)]
    barrier = threading.Barrier(2)
    outcome = []

    def run(assembler):
        barrier.wait()
        try:
            outcome.append(assembler.flush_user("race", batch).assembled)
        except LeaseBusy:
            outcome.append("busy")
            for _ in range(100):  # the redelivery, once the winner has committed
                try:
                    outcome.append(assembler.flush_user("race", batch).assembled)
                    return
                except LeaseBusy:
                    threading.Event().wait(0.05)

    threads = [threading.Thread(target=run, args=(p,)) for p in passes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(str, outcome)) in (["0", "6", "busy"], ["0", "6"])
    [(_, blob, meta)] = recordings(stack_config, "race")
    assert audio_of(blob, 16000) == joined(chunks)
    assert meta["chunks"] == "10"


def test_finalize_racing_a_flush(stack_config, clock):
    chunks = stream("racefin", 6, start_us=clock.now - 300 * 1_000_000)
    make(stack_config, clock).flush_user("racefin", chunks[:3])
    clock.advance(0)  # chunks are already older than the session gap: finalization is due
    later = stream("racefin", 3, start_us=clock.now - 5 * 1_000_000, seed=4)
    finalizer, flusher = make(stack_config, clock), make(stack_config, clock)
    barrier = threading.Barrier(2)
    errors = []

    def finalize():
        barrier.wait()
        try:
            finalizer.finalize_idle()
        except Exception as exc:  # noqa: BLE001 - the thread hands any failure to the test
            errors.append(exc)

    def flush():
        barrier.wait()
        for _ in range(20):
            try:
                flusher.flush_user("racefin", later)
                return
            except LeaseBusy:
                threading.Event().wait(0.05)

    threads = [threading.Thread(target=finalize), threading.Thread(target=flush)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    recs = recordings(stack_config, "racefin")
    # Either order gives the same recordings: the idle one closed, the new chunks in a new one.
    assert [audio_of(b, 16000) for _, b, _ in recs] == [joined(chunks[:3]), joined(later)]


def _crash_scenario(config, clock, uid: str, hook) -> tuple[list[Chunk], list[Chunk], bool]:
    """A recording of 4 chunks exists; the next batch appends 3 and, after a long pause,
    starts a second recording with 2. Returns (expected first, expected second, killed)."""
    start = clock.now - 600 * 1_000_000
    first = stream(uid, 4, start_us=start)
    second = stream(uid, 3, start_us=first[-1].received_at_us, seed=1)
    third = stream(uid, 2, start_us=second[-1].received_at_us + 300 * 1_000_000, seed=2)
    make(config, clock).flush_user(uid, first)
    try:
        make(config, clock, hook=hook).flush_user(uid, second + third)
        killed = False
    except Killed:
        killed = True
    return first + second, third, killed


@pytest.mark.slow
def test_kill_at_every_storage_step_then_retry(stack_config, clock):
    """The flush dies at its n-th storage request, for every n; after the lease expires
    the redelivered batch is flushed again. The recordings are exact every time."""
    counter = KillAt(10**9)
    _crash_scenario(stack_config, clock, "crash-count", counter)
    steps = counter.calls
    assert {"write_state", "upload", "compose", "delete"} <= set(steps)
    for n in range(1, len(steps) + 1):
        uid = f"crash-{n}"
        expected_first, expected_second, killed = _crash_scenario(stack_config, clock, uid, KillAt(n))
        assert killed, f"no kill at step {n}"
        clock.advance(stack_config.lease_seconds + 1)
        make(stack_config, clock).flush_user(uid, expected_first[4:] + expected_second)  # redelivery
        recs = recordings(stack_config, uid)
        assert [audio_of(b, 16000) for _, b, _ in recs] == [joined(expected_first), joined(expected_second)], (
            f"killed at step {n} ({steps[n - 1]})"
        )
        assert [m["chunks"] for _, _, m in recs] == ["7", "2"]


def test_kill_mid_pass_then_redelivery_through_pubsub(stack_config, clock):
    chunks = stream("redeliver", 6, start_us=clock.now - HOUR_US)
    publish(stack_config, chunks)
    steps = []

    def die_at_the_commit(step):  # after the WAV compose, before the state commit
        steps.append(step)
        if step == "write_state" and "compose" in steps:
            raise Killed("before the commit")

    spy = PullSpy(clients.subscriber())
    victim = make(stack_config, clock, hook=die_at_the_commit, subscriber=spy)
    with pytest.raises(Killed):
        victim.run_pass()
    spy.expire(stack_config.subscription_path(stack_config.chunks_subscription))
    clock.advance(stack_config.lease_seconds + 1)
    drain(make(stack_config, clock))
    [(_, blob, _)] = recordings(stack_config, "redeliver")
    assert audio_of(blob, 16000) == joined(chunks)


def pull_all(subscriber, subscription: str, expected: int, attempts: int = 10):
    got = []
    for _ in range(attempts):
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 100}, timeout=3, retry=None
            )
        except exceptions.DeadlineExceeded:
            continue
        got.extend(response.received_messages)
        if response.received_messages:
            subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
        if len(got) >= expected:
            break
    return got


def pull_events(config, expected: int) -> list[dict]:
    subscription = config.subscription_path(resources.recordings_subscription(config))
    return [json.loads(m.message.data) for m in pull_all(clients.subscriber(), subscription, expected)]


def test_shards_split_users_across_passes(stack_config, clock):
    """With N shards each user's chunks go to one topic; pass i drains only shard i."""
    from omi_receiver.runtime.contract import shard_of

    config = dataclasses.replace(
        stack_config,
        assembler_shards=3,
        chunks_topic=f"{stack_config.chunks_topic}-sh",
        chunks_subscription=f"{stack_config.chunks_subscription}-sh",
    )
    resources.provision(config)
    start = clock.now - 60 * 1_000_000
    streams = {f"sharded{i}": stream(f"sharded{i}", 4, start_us=start, seed=i) for i in range(9)}
    publisher = clients.publisher()
    futures = []
    for uid, chunks in streams.items():
        topic = config.topic_path(config.shard_topic(shard_of(uid, 3)))
        futures += [publisher.publish(topic, c.data, **c.attributes()) for c in chunks]
    for f in futures:
        f.result(timeout=30)
    by_shard = {s: [u for u in streams if shard_of(u, 3) == s] for s in range(3)}
    assert sum(1 for users in by_shard.values() if users) >= 2  # the users really spread
    for shard in range(3):
        passes = drain_shard(make(config, clock), shard)
        assert sum(p.assembled for p in passes) == 4 * len(by_shard[shard])
    for uid, chunks in streams.items():
        [(_, blob, _)] = recordings(config, uid)
        assert audio_of(blob, 16000) == joined(chunks)


def drain_shard(assembler, shard: int, max_passes: int = 10):
    passes = []
    for _ in range(max_passes):
        passes.append(assembler.run_pass(shard))
        if passes[-1].pulled == 0:
            return passes
    raise AssertionError("shard not drained")


def test_one_pass_flushes_each_waiting_user_once(stack_config, clock):
    """However Pub/Sub spreads chunks over pull responses (the emulator returns at most
    100 per pull), a pass collects first and then flushes each user once."""
    start = clock.now - 90 * 1_000_000
    streams = {f"busy{i}": stream(f"busy{i}", 30, rate=8000, start_us=start, seed=i) for i in range(20)}
    publish(stack_config, [c for group in zip(*streams.values(), strict=True) for c in group])
    assembler = make(stack_config, clock)
    stats = assembler.run_pass()
    assert stats.assembled == 600 and stats.flushes == 20
    assert stats.storage["uploads"] + stats.storage["composes"] <= 20 * 6 + 2  # 0.2 writes per chunk
    for uid, chunks in streams.items():
        [(_, blob, _)] = recordings(stack_config, uid)
        assert audio_of(blob, 8000) == joined(chunks)


def test_no_finalization_while_a_dead_pass_may_hold_chunks(stack_config, clock):
    """Recordings look idle while a dead pass's chunks wait for redelivery: the recovering
    pass must not finalize them (it judges idleness against the last clean drain)."""
    first = stream("patient", 3, start_us=clock.now - 30 * 1_000_000)
    publish(stack_config, first)
    drain(make(stack_config, clock))
    later = stream("patient", 3, start_us=first[-1].received_at_us, seed=1)
    publish(stack_config, later)

    def die(step):
        if step == "read_state":
            raise Killed("after collecting")

    with pytest.raises(Killed):
        make(stack_config, clock, hook=die).run_pass()
    clock.advance(stack_config.lease_seconds + stack_config.session_gap_seconds)  # all looks idle
    recovering = make(stack_config, clock, subscriber=NothingWaiting())  # as a cold channel's first pull
    assert recovering.run_pass().finalized == 0
    [(_, _, meta)] = recordings(stack_config, "patient")
    assert meta["status"] == "open"


def test_a_pass_that_died_holding_chunks_keeps_their_order(stack_config, clock):
    """The pass dies after pulling a user's chunks but before its first write for them.
    Newer chunks of that user must not be committed ahead of the lost ones: the shard
    waits until they are redelivered, then one pass puts everything in order."""
    old = stream("orphan", 5, start_us=clock.now - 60 * 1_000_000)
    new = stream("orphan", 5, start_us=old[-1].received_at_us, seed=1)
    publish(stack_config, old)
    spy = PullSpy(clients.subscriber())
    steps = []

    def die_before_the_first_user_write(step):
        steps.append(step)
        if step == "read_state":
            raise Killed("after collecting, before any flush")

    with pytest.raises(Killed):
        make(stack_config, clock, subscriber=spy, hook=die_before_the_first_user_write).run_pass()
    assert spy.ack_ids, "the dead pass had pulled the chunks"
    publish(stack_config, new)
    waiting = make(stack_config, clock).run_pass()
    assert waiting.skipped and waiting.pulled == 0  # the newer chunks stay where they are
    clock.advance(stack_config.pass_seconds + stack_config.ack_deadline_seconds + 11)
    # The ack deadline passes (forced here rather than waited for): the old chunks are back.
    spy.expire(stack_config.subscription_path(stack_config.chunks_subscription))
    drain(make(stack_config, clock))
    [(name, blob, _)] = recordings(stack_config, "orphan")
    assert "-late-" not in name
    assert audio_of(blob, 16000) == joined(old + new)


def _each_chunk_once(config, uid: str, chunks) -> None:
    """Every chunk's audio is in the user's recordings exactly once (some may be late ones)."""
    size = len(chunks[0].data)
    pieces = [
        audio[i : i + size]
        for _, blob, _ in recordings(config, uid)
        for audio in [audio_of(blob, chunks[0].sample_rate)]
        for i in range(0, len(audio), size)
    ]
    assert sorted(pieces) == sorted(c.data for c in chunks)


def test_a_backlog_over_max_pass_bytes_keeps_moving_and_nothing_is_dead_lettered(stack_config, clock):
    """More waits than MAX_PASS_BYTES, and the emulator hands the chunks out in no useful
    order. Committing only what is older than
    the latest pull used to commit nothing pass after pass, until the dead-letter policy took
    the chunks (10 deliveries). Now every pass that pulls makes progress and every chunk is
    assembled exactly once, out-of-order ones as late recordings."""
    config = dataclasses.replace(stack_config, max_pass_bytes=150 * 16_000)  # production's floor is 16 MiB
    start = clock.now - 10 * 60 * 1_000_000
    streams = {f"capped{i}": stream(f"capped{i}", 100, rate=8000, start_us=start, seed=i) for i in range(3)}
    publish(config, [c for group in zip(*streams.values(), strict=True) for c in group])
    passes = drain(make(config, clock), max_passes=8)
    assert all(p.assembled > 0 for p in passes if p.pulled)
    assert sum(p.assembled for p in passes) == 300 and sum(p.duplicates for p in passes) == 0
    assert passes[-1].stopped == "drained"
    assert {p.stopped for p in passes} <= {"drained", "max_pass_bytes"}
    for uid, chunks in streams.items():
        _each_chunk_once(config, uid, chunks)


def test_one_pull_over_max_pass_bytes_is_committed_whole(stack_config, clock):
    """A single pull that brings more than MAX_PASS_BYTES holds the round's oldest chunk:
    the pull is committed, in order, and the pass goes on collecting."""
    config = dataclasses.replace(stack_config, max_pass_bytes=6 * 16_000)
    start = clock.now - 10 * 60 * 1_000_000
    streams = {f"onepull{i}": stream(f"onepull{i}", 10, rate=8000, start_us=start, seed=i) for i in range(3)}
    publish(config, [c for group in zip(*streams.values(), strict=True) for c in group])
    stats = make(config, clock).run_pass()
    assert (stats.assembled, stats.held, stats.late, stats.stopped) == (30, 0, 0, "drained")
    for uid, chunks in streams.items():
        [(_, blob, _)] = recordings(config, uid)
        assert audio_of(blob, 8000) == joined(chunks)
