"""The short soak: bench.soak with 5 devices for 1 minute, every fault of `make soak`.

Same code as `make soak` (50 devices, 10 minutes): the assembler (a functions-framework
process) is SIGKILLed mid-pass and SIGSTOPped past the ack deadline, Cloud Storage answers
429/503 to 12 % of its requests (before or after they took effect), current senders repeat
POSTs with the same Idempotency-Key and cut some part-way (the full Content-Length
announced, part of the body sent, the connection closed; then the whole chunk is retried
under the same key), one device pauses longer than the session gap, one switches sample
rate, and MAX_RECORDING_SECONDS is short enough to split every plain device once. Then every
recording is checked against the devices' ledgers.
About 2 minutes; uses the session's emulators (tests/conftest.py).
"""

from __future__ import annotations

import pytest

from bench import soak

pytestmark = [pytest.mark.slow, pytest.mark.timeout(290)]


def short_settings(tmp_path) -> soak.Settings:
    return soak.Settings(
        devices=5,  # current 16k pausing, legacy 16k, current 8k, current 8k->16k, legacy 16k
        minutes=1.0,
        seed=7,
        session_gap=35,
        pause_for=48,  # > gap + 5, and the current senders' X (<= 5 s) is far below the gap
        max_recording=40,
        kill_spacing=(14.0, 20.0),  # kill, stall, kill
        duplicate_rate=0.1,
        cut_rate=0.1,  # 10 cut uploads with this seed (8 of an even number of bytes)
        error_rate=0.12,  # a short run makes few storage requests: fail enough of them
        workdir=tmp_path / "soak",
    )


def test_short_soak_loses_and_doubles_nothing(pubsub_emulator, gcs_emulator, tmp_path):
    result = soak.run(short_settings(tmp_path), pubsub_host=pubsub_emulator, gcs_url=gcs_emulator)
    chunks, checks, faults, recs = result["chunks"], result["checks"], result["faults"], result["recordings"]

    # Every fault happened.
    assert faults["assembler_kills"] >= 1 and faults["assembler_stalls"] >= 1, faults
    assert faults["storage_errors_before_after"].get("after", 0) >= 1
    assert set(faults["storage_errors_by_status"]) <= {"429", "503"} and faults["storage_errors"] >= 3
    assert faults["duplicate_posts"] >= 3
    assert faults["cut_uploads"] >= 5
    assert faults["pausing_devices"] == 1 and faults["rate_switching_devices"] == 1

    # Nothing lost, nothing doubled, every acknowledged chunk in place.
    assert chunks["acknowledged"] > 100
    assert chunks["lost"] == 0 and chunks["duplicated"] == 0, result["problems"]
    assert chunks["assembled"] == chunks["acknowledged"]
    assert checks["out_of_order"] == 0 and checks["late_files"] == 0

    # Right splits: at the pause (only on the pausing device), at the rate change, at the
    # maximum length, and nowhere else.
    assert checks["missing_splits"] == 0 and checks["unexpected_splits"] == 0, result["problems"]
    assert recs["gap_splits_per_pausing_device"] == [(1, 1)]
    assert recs["gap_splits_per_plain_device"] == [(0, 3)]
    assert recs["splits_by_reason"].get("rate") == 1 and recs["splits_by_reason"].get("max", 0) >= 3

    # Recovered: drained, nothing dead-lettered or left open, no pass hung.
    assert checks["drained"] and checks["dead_lettered"] == 0 and checks["open_recordings_left"] == 0
    assert checks["hung_passes"] == 0, result["assembler"]["hung"]
    assert result["passed"], result["problems"]
