"""`omi-receiver dlq inspect` / `dlq replay` through the command line, after a dead letter
forced the way production makes one (test_deadletter.force_dead_letter: the emulator
forwards a chunk nacked MAX_DELIVERY_ATTEMPTS times)."""

from __future__ import annotations

import json
import os

import pytest
from assembly import audio_of, drain, joined, publish, recordings, stream
from test_cli import assert_fails_fast_in_one_line, cli_processes, out_of_reach_env, run
from test_deadletter import force_dead_letter

from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.contract import now_us


@pytest.fixture(autouse=True)
def _fresh_chunk_publisher():
    clients.set_chunk_publisher(None)  # replay publishes with it; emulator_env does not reset it
    yield
    clients.set_chunk_publisher(None)


def test_inspect_then_replay_with_a_limit_puts_each_chunk_in_its_recording_once(env, capsys):
    chunks = stream("dlq-user", 4, start_us=now_us() - 10_000_000, seed=11)
    publish(env, chunks[:1])
    drain(Assembler(env))
    force_dead_letter(env, chunks[1:3])

    code, out, err = run(capsys, "dlq", "inspect")
    assert code == 0, err
    assert out.count("dlq-user") == 2 and "2 message(s) waiting" in out
    code, out, _ = run(capsys, "dlq", "inspect", "--json")
    letters = json.loads(out)
    assert sorted(d["chunk_id"] for d in letters) == sorted(c.chunk_id for c in chunks[1:3])
    assert all(d["replayable"] and d["delivery_attempts"] == 10 for d in letters)

    code, out, err = run(capsys, "dlq", "replay", "--limit", "1", "-q")
    assert code == 0, err
    assert "replayed 1," in out and "still waiting 1" in out
    code, out, err = run(capsys, "dlq", "replay", "-q")
    assert code == 0 and "replayed 1," in out and "still waiting 0" in out
    code, out, _ = run(capsys, "dlq", "replay", "-q")  # nothing left: nothing doubled
    assert "replayed 0," in out

    publish(env, chunks[3:])
    drain(Assembler(env))
    [(_, blob, _)] = recordings(env, "dlq-user")
    assert audio_of(blob, 16000) == joined(chunks)


def test_missing_hold_subscription_is_a_clear_error(env, capsys, monkeypatch):
    monkeypatch.setenv("DEAD_LETTER_TOPIC", "no-such-dead-letters")
    code, _, err = run(capsys, "dlq", "inspect")
    assert code == 1 and "no-such-dead-letters-hold" in err


@pytest.mark.slow
def test_pubsub_out_of_reach_fails_within_seconds_in_one_line(dead_port):
    """A host that never answers used to pass for an empty hold subscription (exit 0)."""
    port, reason = dead_port
    host = f"127.0.0.1:{port}"
    environ = out_of_reach_env(f"http://{host}", host)
    for result in cli_processes(environ, [["dlq", "inspect"], ["dlq", "replay", "-q"]]):
        assert_fails_fast_in_one_line(
            result,
            f"PUBSUB_EMULATOR_HOST={host}",
            "subscription projects/omi-test/subscriptions/audio-chunks-dead-letter-hold",
            reason,
        )


@pytest.mark.slow
def test_replay_with_cloud_storage_out_of_reach_fails_fast_and_keeps_the_letter(env, capsys):
    from omi_receiver.devtools.emulators import free_port

    chunks = stream("dlq-away", 2, start_us=now_us() - 10_000_000, seed=12)
    force_dead_letter(env, chunks[:1])
    host = f"http://127.0.0.1:{free_port()}"
    [result] = cli_processes({**os.environ, "STORAGE_EMULATOR_HOST": host}, [["dlq", "replay", "-q"]])
    assert_fails_fast_in_one_line(
        result, f"STORAGE_EMULATOR_HOST={host}", f"bucket {env.recordings_bucket}", "connection refused"
    )
    code, out, _ = run(capsys, "dlq", "inspect")
    assert code == 0 and "1 message(s) waiting" in out  # not acked: replayed later, nothing lost


def test_a_pubsub_emulator_host_written_as_a_url_is_one_clear_line(env, capsys, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"http://{os.environ['PUBSUB_EMULATOR_HOST']}")  # like STORAGE_...
    clients.set_subscriber(None)
    for argv in (["dlq", "inspect"], ["dlq", "replay", "-q"]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and err.startswith("error: PUBSUB_EMULATOR_HOST=") and "without a scheme" in err, err
