"""`omi-receiver dlq inspect` / `dlq replay` through the command line, after a dead letter
forced the way production makes one (test_deadletter.force_dead_letter: the emulator
forwards a chunk nacked MAX_DELIVERY_ATTEMPTS times)."""

from __future__ import annotations

import json

import pytest

from omi_receiver import clients
from omi_receiver.assembler import Assembler
from omi_receiver.contract import now_us

from assembly import audio_of, drain, joined, publish, recordings, stream
from test_cli import env, run  # noqa: F401 - env is a fixture
from test_deadletter import force_dead_letter


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
