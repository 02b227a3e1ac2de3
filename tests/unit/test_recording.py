"""plan_batch: duplicates, late chunks, and the audio-clock session model (pure)."""

from __future__ import annotations

import dataclasses

from omi_receiver.runtime.assembler.recording import Rules, UserState, plan_batch, recording_name
from omi_receiver.runtime.contract import Chunk

S = 1_000_000
RULES = Rules(session_gap_us=120 * S, max_recording_us=3600 * S, dedup_window_us=900 * S)


def chunk(i: int, t_s: float, rate: int = 16000, seconds: float = 1.0) -> Chunk:
    return Chunk("u", rate, int(t_s * S), f"c{i}", b"\x00\x01" * int(rate * seconds))


def test_bursts_every_10_s_stay_one_recording_without_gaps():
    chunks = [chunk(b * 10 + i, 1000 + b * 10 + i * 0.01) for b in range(6) for i in range(10)]
    plan = plan_batch(UserState("u"), chunks, RULES)
    [segment] = plan.segments
    assert len(segment.chunks) == 60 and segment.recording.gaps == 0


def test_one_300_s_legacy_post_every_300_s_is_continuous_when_the_gap_exceeds_it():
    chunks = [chunk(i, 1000 + 300 * (i + 1), seconds=300) for i in range(4)]
    rules = Rules(session_gap_us=400 * S, max_recording_us=3600 * S, dedup_window_us=900 * S)
    plan = plan_batch(UserState("u"), chunks, rules)
    assert len(plan.segments) == 1 and plan.segments[0].recording.gaps == 0


def test_an_app_interval_above_the_gap_splits_per_batch_and_loses_nothing():
    # Documented: SESSION_GAP_SECONDS must exceed the app's interval. If it does not, a
    # tick finalizes the idle recording between batches; the split is the same here.
    chunks = [chunk(i, 1000 + 300 * (i + 1), seconds=300) for i in range(4)]
    plan = plan_batch(UserState("u"), chunks, RULES)
    assert [len(s.chunks) for s in plan.segments] == [1, 1, 1, 1]


def test_dropped_batch_is_a_gap_not_a_split():
    # 1-s chunks in 10-s bursts; one burst (10 s of audio) never arrives.
    times = [1000 + b * 10 + i * 0.01 for b in (0, 1, 3, 4) for i in range(10)]
    plan = plan_batch(UserState("u"), [chunk(n, t) for n, t in enumerate(times)], RULES)
    [segment] = plan.segments
    assert segment.recording.gaps == 1 and 9 * S < segment.recording.gap_us < 11 * S


def test_a_200_s_pause_splits_once():
    before = [chunk(i, 1000 + i) for i in range(5)]
    after = [chunk(10 + i, 1205 + i) for i in range(5)]
    plan = plan_batch(UserState("u"), before + after, RULES)
    assert [len(s.chunks) for s in plan.segments] == [5, 5]
    assert plan.segments[0].closes and not plan.segments[1].closes


def test_duplicates_and_late_chunks():
    first = plan_batch(UserState("u"), [chunk(i, 1000 + i) for i in range(5)], RULES)
    state = first.state
    batch = [chunk(2, 1002), chunk(9, 1001.5), chunk(5, 1005)]  # dup, late, new
    plan = plan_batch(state, batch, RULES)
    assert [c.chunk_id for c in plan.duplicates] == ["c2"]
    assert [c.chunk_id for c in plan.late] == ["c9"]
    assert [c.chunk_id for s in plan.segments for c in s.chunks] == ["c5"]
    assert "c9" in plan.state.recent  # a redelivered late chunk is a duplicate next time


def test_chunk_ids_are_forgotten_after_the_window():
    plan = plan_batch(UserState("u"), [chunk(0, 1000), chunk(1, 1000 + 1000)], RULES)
    assert set(plan.state.recent) == {"c1"}


def test_plan_does_not_modify_the_input_state():
    state = plan_batch(UserState("u"), [chunk(0, 1000)], RULES).state
    before = state.to_json()
    plan_batch(state, [chunk(1, 1001)], RULES)
    assert state.to_json() == before


def test_state_round_trips_through_json():
    state = plan_batch(UserState("u"), [chunk(0, 1000), chunk(1, 1001)], RULES).state
    assert UserState.from_json(state.to_json()) == state


def test_chunks_received_before_an_erase_are_dropped_and_later_ones_start_afresh():
    marker = UserState("u", watermark_us=1010 * S, erased_before_us=1010 * S)
    plan = plan_batch(marker, [chunk(0, 1009), chunk(1, 1009.9), chunk(2, 1011), chunk(3, 1012)], RULES)
    assert [c.chunk_id for c in plan.erased] == ["c0", "c1"]
    assert plan.late == [] and plan.duplicates == []
    [segment] = plan.segments
    assert segment.new and [c.chunk_id for c in segment.chunks] == ["c2", "c3"]
    assert plan.state.erased_before_us == 1010 * S  # kept for what may still arrive
    assert UserState.from_json(plan.state.to_json()) == plan.state


def test_names_sort_by_start_and_only_recordings_end_in_wav():
    a = recording_name("u", 1_700_000_000 * S)
    b = recording_name("u", 1_700_000_000 * S + 1500)
    c = recording_name("u", 1_700_000_100 * S)
    assert a < c and a.startswith("recordings/u/2023-11-14/") and a.endswith(".wav")
    assert b.endswith("Z.wav")


def test_only_a_bare_erase_marker_is_listed_as_one():
    marker = UserState(uid="u", watermark_us=5, erased_before_us=5)
    assert marker.is_erase_marker()
    assert marker.list_metadata() == {"open": "0", "erased_before_us": "5"}
    # A chunk since the erase (its id is remembered), or an open recording: a state to keep.
    streamed = dataclasses.replace(marker, recent={"c1": 6})
    assert not streamed.is_erase_marker() and streamed.list_metadata() == {"open": "0"}
    assert UserState(uid="u").list_metadata() == {"open": "0"}
    back = UserState.from_json(marker.to_json())
    assert back.is_erase_marker() and back.erased_before_us == 5
