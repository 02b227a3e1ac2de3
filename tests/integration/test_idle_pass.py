"""An idle pass (nothing waiting, no recording open, sweeps not due) only reads its shard
lease and probes the subscription: no Class A request, no lease write, well under a second.
Everything else a pass does still happens when it is needed (docs/design.md, "An idle pass").
"""

from __future__ import annotations

import dataclasses

import pytest
from assembly import Killed, PullSpy, audio_of, drain, joined, publish, recordings, stream

from omi_receiver.devtools import resources
from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.assembler.recording import ShardLease, UserState, shard_lease_name, state_name
from omi_receiver.runtime.assembler.sweeps import ERASE_MARKER_KEEP_US
from omi_receiver.runtime.contract import shard_of

HOUR_S = 3600
CLASS_A = ("uploads", "composes", "patches", "lists")
TICK_S = 60


def idle_us(config) -> int:
    """From a recording's last chunk to the first pass that can move the drain past it:
    SESSION_GAP_SECONDS + the drain margin + 1 s."""
    margin = max(config.settle_seconds, config.publish_timeout_seconds + 2)
    return int((config.session_gap_seconds + margin + 1) * 1_000_000)


def make(config, clock, **kw):
    return Assembler(config, clock=clock, **kw)


def lease_blob(config):
    return clients.storage_client().bucket(config.recordings_bucket).get_blob(shard_lease_name(0))


def lease_of(config) -> ShardLease:
    return ShardLease.from_json(lease_blob(config).download_as_bytes())


def class_a(stats) -> int:
    return sum(stats.storage[kind] for kind in CLASS_A)


def go_idle(config, clock) -> Assembler:
    """An assembler whose shard's last pass found nothing: its next pass is idle."""
    assembler = make(config, clock)
    first = assembler.run_pass()  # no lease yet: a full pass
    assert first.skipped == "" and first.storage["lists"] == 1
    assert lease_of(config).sweep_due_us > clock.now
    return assembler


def test_an_idle_pass_after_finalization_makes_no_class_a_request(stack_config, clock):
    """A pass sweeps only once a sweep could finalize the open recording (its last chunk +
    gap + drain margin): the tick before only probes, the one at that time moves the drain
    past it, the next finalizes. The passes after that only read the lease and probe."""
    chunks = stream("quiet", 3, start_us=clock.now - 30 * 1_000_000)
    publish(stack_config, chunks)
    assembler = make(stack_config, clock)
    passes = drain(assembler)
    ticks = []
    for _ in range(6):  # a minute per tick, until the recording is final
        clock.advance(60)
        ticks.append(assembler.run_pass())
        if ticks[-1].finalized:
            break
    assert ticks[-1].finalized == 1, ticks
    # The first pass (no lease yet) swept; then probes until the due time, then two sweeps.
    assert [p.swept for p in passes] == [True] + [False] * (len(passes) - 1)
    # (Finalizing lists the user's work/ objects too.)
    assert [(t.skipped, t.swept, min(t.storage["lists"], 1)) for t in ticks] == [
        ("idle", False, 0),
        ("", True, 1),
        ("", True, 1),
    ]
    [(_, blob, meta)] = recordings(stack_config, "quiet")
    assert meta["status"] == "final" and audio_of(blob, 16000) == joined(chunks)

    generation = lease_blob(stack_config).generation
    for _ in range(3):
        clock.advance(60)
        idle = assembler.run_pass()
        assert idle.skipped == "idle" and idle.pulled == 0
        assert class_a(idle) == 0 and idle.storage["reads"] == 1  # the lease only
        assert idle.seconds < 1.0, idle.seconds
    assert lease_blob(stack_config).generation == generation  # no lease write


def test_a_chunk_published_while_idle_is_assembled_on_the_next_pass(stack_config, clock):
    assembler = go_idle(stack_config, clock)
    assert assembler.run_pass().skipped == "idle"
    chunks = stream("wakes", 4, start_us=clock.now - 30 * 1_000_000)
    publish(stack_config, chunks)
    woke = assembler.run_pass()
    # The probed chunk is part of the pass: pulled once, not released and pulled again.
    assert (woke.skipped, woke.pulled, woke.assembled, woke.held) == ("", 4, 4, 0)
    [(_, blob, _)] = recordings(stack_config, "wakes")
    assert audio_of(blob, 16000) == joined(chunks)
    # A pass that pulled is followed by a full pass (the lease is taken before any pull while
    # chunks come), which finds nothing and lists nothing: a recording is open, but no sweep
    # could finalize it before its last chunk + gap + drain margin. From then on the passes
    # only probe.
    after = assembler.run_pass()
    assert (after.skipped, after.pulled, after.swept, after.storage["lists"]) == ("", 0, False, 0)
    assert assembler.run_pass().skipped == "idle"
    lease = lease_of(stack_config)
    assert (
        lease.open_due == {"wakes": chunks[-1].received_at_us + idle_us(stack_config)} == {"wakes": lease.sweep_due_us}
    )


def test_erase_markers_are_still_forgotten_by_a_daily_sweep(stack_config, clock):
    assembler = go_idle(stack_config, clock)
    # A bare erase marker (as `recordings erase` leaves it) that comes of age in 12 hours.
    marker = UserState("erased", erased_before_us=clock.now - ERASE_MARKER_KEEP_US + 12 * HOUR_S * 1_000_000)
    assembler.store.write_state(marker, 0)
    state = clients.storage_client().bucket(stack_config.recordings_bucket).blob(state_name("erased"))
    clock.advance(13 * HOUR_S)  # of age, but the sweep is not due yet: a day late is harmless
    assert assembler.run_pass().skipped == "idle"
    assert state.exists()
    clock.advance(12 * HOUR_S)  # a day after the last sweep
    swept = assembler.run_pass()
    assert swept.skipped == "" and swept.storage["lists"] == 1
    assert not state.exists()
    assert lease_of(stack_config).sweep_due_us == clock.now + 24 * HOUR_S * 1_000_000


def test_a_lease_written_before_sweep_due_existed_means_a_full_pass(stack_config, clock):
    old = {"owner": "before", "started_us": clock.now - 60_000_000, "released": True, "drained_us": 5}
    blob = clients.storage_client().bucket(stack_config.recordings_bucket).blob(shard_lease_name(0))
    blob.upload_from_string(ShardLease(**old).to_json().replace(b', "sweep_due_us": 0', b""))
    assert b"sweep_due_us" not in blob.download_as_bytes()
    assert ShardLease.from_json(blob.download_as_bytes()) == ShardLease(**old, sweep_due_us=0)
    stats = make(stack_config, clock).run_pass()
    assert stats.skipped == "" and stats.storage["lists"] == 1 and stats.storage["uploads"] == 2
    assert lease_of(stack_config).sweep_due_us > clock.now


def test_a_probe_that_loses_the_shard_to_another_pass_hands_its_chunk_back(stack_config, clock):
    """Two passes probe one shard at once (a tick delivered twice): the one that loses the
    lease write releases what it probed at once, for the winner or the next tick."""
    go_idle(stack_config, clock)
    chunks = stream("raced", 1, start_us=clock.now - 30 * 1_000_000)
    publish(stack_config, chunks)

    def other_pass_takes_the_lease(step):
        if step == "write_shard_lease":
            blob = lease_blob(stack_config)
            blob.upload_from_string(blob.download_as_bytes(), if_generation_match=blob.generation)

    loser = make(stack_config, clock, hook=other_pass_takes_the_lease).run_pass()
    assert loser.skipped == "shard busy" and loser.assembled == 0
    # Handed back, not left leased until the ack deadline: the next pass assembles it.
    stats = make(stack_config, clock).run_pass()
    assert stats.assembled == 1
    [(_, blob, _)] = recordings(stack_config, "raced")
    assert audio_of(blob, 16000) == joined(chunks)


def test_an_instance_that_dies_holding_the_probed_chunk_loses_and_doubles_nothing(stack_config, clock):
    """The probe pulls without the shard lease. An instance that dies between that pull and
    its lease write holds one chunk until the ack deadline, unseen by the dead-pass rule:
    newer chunks of its user are committed first, and the chunk, when it comes back, is
    older than committed audio, so it gets a late recording of its own."""
    go_idle(stack_config, clock)
    old = stream("orphan", 1, start_us=clock.now - 60 * 1_000_000)
    new = stream("orphan", 3, start_us=old[-1].received_at_us, seed=1)
    publish(stack_config, old)

    def die_before_the_lease_write(step):
        if step == "write_shard_lease":
            raise Killed("after the probe's pull")

    spy = PullSpy(clients.subscriber())
    with pytest.raises(Killed):
        make(stack_config, clock, subscriber=spy, hook=die_before_the_lease_write).run_pass()
    assert len(spy.ack_ids) == 1 and lease_of(stack_config).released
    publish(stack_config, new)
    survivor = make(stack_config, clock)
    assert sum(p.assembled for p in drain(survivor)) == 3
    # The ack deadline passes (forced here rather than waited for): the probed chunk is back.
    spy.expire(stack_config.subscription_path(stack_config.chunks_subscription))
    passes = drain(survivor)
    assert (sum(p.late for p in passes), sum(p.duplicates for p in passes)) == (1, 0)
    recs = recordings(stack_config, "orphan")
    assert [(audio_of(b, 16000), "-late-" in n) for n, b, _ in recs] == [(joined(old), True), (joined(new), False)]
    # Redelivered once more, it is a duplicate: never doubled.
    publish(stack_config, old)
    assert sum(p.duplicates for p in drain(survivor)) == 1
    assert len(recordings(stack_config, "orphan")) == 2


def test_an_open_recording_in_another_shard_does_not_keep_this_one_sweeping(stack_config, clock):
    """Only the shard's own users count: each shard's pass finalizes only its own."""
    config = dataclasses.replace(
        stack_config,
        assembler_shards=2,
        chunks_topic=f"{stack_config.chunks_topic}-sh",
        chunks_subscription=f"{stack_config.chunks_subscription}-sh",
    )
    resources.provision(config)
    uid = next(u for u in (f"other{i}" for i in range(50)) if shard_of(u, 2) == 1)
    assembler = make(config, clock)
    assembler.flush_user(uid, stream(uid, 2, start_us=clock.now - 30 * 1_000_000))  # open, in shard 1
    assert assembler.run_pass(0).storage["lists"] == 1  # shard 0's first pass: full
    assert assembler.run_pass(0).skipped == "idle"


def stream_minute(config, clock, uid: str, minute: int, start_us: int):
    """The minute `minute` of a stream that began at `start_us`: 60 1-s chunks, published."""
    chunks = stream(uid, 60, start_us=start_us + minute * TICK_S * 1_000_000, seed=minute)
    publish(config, chunks)
    return chunks


def test_a_streaming_user_keeps_no_pass_listing_and_is_finalized_on_time(stack_config, clock):
    """While a user streams, each flush moves the recording's due time on: no pass after the
    first lists the state objects. After the last chunk, no listing until a sweep could
    finalize it; then it is final within the gap + margin + two ticks."""
    assert idle_us(stack_config) <= 3 * TICK_S * 1_000_000  # the tick pattern below
    assembler = make(stack_config, clock)
    start = clock.now - 75 * 1_000_000  # each tick's last chunk came 15 s before it: settled
    sent, streaming = [], []
    for minute in range(4):
        sent += stream_minute(stack_config, clock, "streamer", minute, start)
        streaming.append(assembler.run_pass())
        clock.advance(TICK_S)
    assert [(p.pulled, p.assembled) for p in streaming] == [(60, 60)] * 4
    assert streaming[0].swept and streaming[0].storage["lists"] == 1  # no lease yet
    for steady in streaming[1:]:
        assert not steady.swept and steady.storage["lists"] == 0, steady
    last = sent[-1].received_at_us
    assert lease_of(stack_config).sweep_due_us == last + idle_us(stack_config)

    ticks = []
    while not (ticks and ticks[-1].finalized):
        ticks.append(assembler.run_pass())
        assert len(ticks) <= 3, ticks
        clock.advance(TICK_S)
    finalized_at = clock.now - TICK_S * 1_000_000
    # After the last pull a full pass that finds nothing (no listing: not due), then sweeps.
    assert [(t.skipped, t.swept) for t in ticks] == [("", False), ("", True), ("", True)]
    assert ticks[0].pulled == 0 and ticks[0].storage["lists"] == 0
    assert finalized_at - last <= idle_us(stack_config) + 2 * TICK_S * 1_000_000
    [(_, blob, meta)] = recordings(stack_config, "streamer")
    assert meta["status"] == "final" and audio_of(blob, 16000) == joined(sent)
    # None open: the next sweep is the daily one.
    assert lease_of(stack_config).sweep_due_us == finalized_at + 24 * HOUR_S * 1_000_000
    assert assembler.run_pass().skipped == "idle"


def test_a_user_who_starts_while_another_streams_is_finalized_on_time(stack_config, clock):
    """Its due time comes before the streaming user's: the sweeps run for it, not daily."""
    assembler = make(stack_config, clock)
    start = clock.now - 75 * 1_000_000
    brief = []
    for minute in range(8):  # "long" streams throughout; "brief" for one minute
        stream_minute(stack_config, clock, "long", minute, start)
        if minute == 1:
            brief = stream_minute(stack_config, clock, "brief", minute, start)
        stats = assembler.run_pass()
        assert stats.pulled == (120 if minute == 1 else 60)
        briefs = recordings(stack_config, "brief")
        if briefs and briefs[0][2]["status"] == "final":
            break
        clock.advance(TICK_S)
    assert stats.finalized == 1
    assert clock.now - brief[-1].received_at_us <= idle_us(stack_config) + 2 * TICK_S * 1_000_000
    [(_, _, meta)] = recordings(stack_config, "long")
    assert meta["status"] == "open"
    # Only "long" is open: its due time, moved on by its flushes, is the next sweep.
    lease = lease_of(stack_config)
    assert list(lease.open_due) == ["long"] and lease.sweep_due_us > clock.now


def test_the_pass_after_a_dead_pass_sweeps_whatever_the_due_time(stack_config, clock):
    """A pass that died may have committed a recording it never noted in the lease."""
    assembler = go_idle(stack_config, clock)
    dead = dataclasses.replace(
        lease_of(stack_config), owner="dead", started_us=clock.now, released=False, sweep_due_us=clock.now + 10**12
    )
    blob = lease_blob(stack_config)
    blob.upload_from_string(dead.to_json(), if_generation_match=blob.generation)
    clock.advance(stack_config.lease_seconds + 1)
    stats = assembler.run_pass()
    assert stats.skipped == "" and stats.swept and stats.storage["lists"] == 1
