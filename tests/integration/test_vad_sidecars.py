"""The VAD consumer against fake-gcs-server (and, end to end, the Pub/Sub emulator pushing
a real finished-recording event to `analyze_recording` served by functions-framework).

The recordings are the speech sample between stretches of digital silence; the sidecar's
segments must cover the speech and not the silence. Repeats, erases and rewrites of the
WAV during the analysis must leave exactly the right sidecar, or none.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path

import pytest
import vad_consumer as vad
from assembly import Clock, drain, publish
from cloudevents.http import CloudEvent
from served import served_on_recordings

from omi_receiver.runtime import clients, wav
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.compaction import Compactor, Format, Settings
from omi_receiver.runtime.contract import Chunk

ROOT = Path(__file__).resolve().parents[2]
SILENCE_S = 3


def speech_with_silence() -> tuple[bytes, int, float, float]:
    """(pcm, rate, speech start, speech end): the sample with SILENCE_S seconds of digital
    silence before and after it."""
    with wave.open(str(ROOT / "samples" / "speech-16k.wav")) as w:
        speech, rate = w.readframes(w.getnframes()), w.getframerate()
    silence = bytes(2 * rate * SILENCE_S)
    return silence + speech + silence, rate, SILENCE_S, SILENCE_S + len(speech) / (2 * rate)


@pytest.fixture
def bucket(stack_config):
    """The test's recordings bucket; the consumer starts as a fresh instance (its settings
    and client are read and built on first use, the client on the emulator)."""
    vad.instance_settings.cache_clear()
    vad.storage_client.cache_clear()
    yield clients.storage_client().bucket(stack_config.recordings_bucket)
    vad.instance_settings.cache_clear()
    vad.storage_client.cache_clear()


def put_wav(bucket, pcm: bytes, rate: int = 16000, uid: str | None = None) -> str:
    name = f"recordings/{uid or uuid.uuid4().hex[:8]}/2025-01-02/20250102T030405.678Z.wav"
    bucket.blob(name).upload_from_string(wav.header(rate, len(pcm)) + pcm, content_type="audio/wav")
    return name


def event_for(bucket, name: str) -> CloudEvent:
    body = {"uid": name.split("/")[1], "uri": f"gs://{bucket.name}/{name}", "bucket": bucket.name, "name": name}
    message = {"data": base64.b64encode(json.dumps(body).encode()).decode(), "attributes": {"name": name}}
    return CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "test"},
        {"message": message, "subscription": "test"},
    )


def sidecar_of(bucket, name: str):
    """(body, blob) of the recording's sidecar, or (None, None)."""
    blob = bucket.get_blob(vad.sidecar_name(name))
    return (json.loads(blob.download_as_bytes()), blob) if blob else (None, None)


def events(capsys) -> list[str]:
    return [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def assert_covers_the_speech(body: dict, start: float, end: float) -> None:
    spans = body["segments"]
    assert spans, body
    assert start - 0.03 <= spans[0]["start"] < start + 0.5
    assert end - 1.0 < spans[-1]["end"] <= end + 0.03
    assert body["speech_seconds"] > 0.8 * (end - start)
    assert body["speech_ratio"] < (end - start) / (end - start + 2 * SILENCE_S) + 0.01


def test_the_sidecar_marks_the_speech_and_not_the_silence(bucket, capsys, monkeypatch):
    monkeypatch.setenv("VAD_AGGRESSIVENESS", "3")
    pcm, rate, start, end = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    returned = vad.handle_event(event_for(bucket, name))
    body, blob = sidecar_of(bucket, name)
    assert body == returned
    generation = str(bucket.get_blob(name).generation)
    assert body["recording"] == name and body["bucket"] == bucket.name and body["generation"] == generation
    assert (body["sample_rate"], body["frame_ms"], body["aggressiveness"], body["version"]) == (16000, 30, 3, 1)
    assert body["duration_seconds"] == round(len(pcm) / (2 * rate), 3)
    assert body["analyzed_at"].endswith("Z")  # as the event's start and end
    assert_covers_the_speech(body, start, end)
    assert blob.name.endswith(".vad.json") and blob.content_type == "application/json"
    assert blob.metadata == {"wav_generation": generation, "vad_version": "1"}
    assert events(capsys) == ["vad_analyzed"]


def test_a_long_recording_is_streamed_not_loaded(bucket, monkeypatch):
    """Ten minutes (19 MB) analyzed in 256 KiB reads: memory follows the block, not the file."""
    import tracemalloc

    pcm, rate, _, _ = speech_with_silence()
    ten_minutes = (pcm * (600 * 2 * rate // len(pcm) + 1))[: 600 * 2 * rate]
    name = put_wav(bucket, ten_minutes, rate)
    del ten_minutes
    monkeypatch.setattr(vad, "READ_BYTES", 256 * 1024)
    tracemalloc.start()
    try:
        body = vad.process(bucket.name, name, vad.Settings())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert body["duration_seconds"] == 600.0 and len(body["segments"]) > 10
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 19 MB recording"


def test_a_repeated_event_changes_nothing(bucket, capsys):
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    first = vad.handle_event(event_for(bucket, name))
    _, blob = sidecar_of(bucket, name)
    for _ in range(2):
        assert vad.handle_event(event_for(bucket, name)) is None
    again, same = sidecar_of(bucket, name)
    assert again == first and same.generation == blob.generation  # not even rewritten
    assert events(capsys) == ["vad_analyzed", "vad_already_done", "vad_already_done"]


def test_two_deliveries_at_once_write_the_sidecar_once(bucket, capsys, monkeypatch):
    """A second delivery of the same event finishes first; the first one's write then fails
    its precondition, finds the sidecar describes the same WAV generation, and succeeds."""
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    real, other = vad.analyze, []

    def racing(stream, mode):
        if not other:
            monkeypatch.setattr(vad, "analyze", real)
            other.append(vad.process(bucket.name, name, vad.Settings()))  # the other delivery, start to end
        return real(stream, mode)

    monkeypatch.setattr(vad, "analyze", racing)
    assert vad.handle_event(event_for(bucket, name)) is None
    body, _ = sidecar_of(bucket, name)
    assert body == other[0] and body["generation"] == str(bucket.get_blob(name).generation)
    assert events(capsys) == ["vad_analyzed", "vad_already_done"]


def test_a_rewritten_wav_gets_a_new_sidecar(bucket):
    """A repeated finalization rewrites the WAV (same audio, new generation) and repeats the
    event: the sidecar is replaced by one naming the new generation."""
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    first = vad.process(bucket.name, name, vad.Settings())
    bucket.blob(name).upload_from_string(wav.header(rate, len(pcm)) + pcm, content_type="audio/wav")
    second = vad.process(bucket.name, name, vad.Settings())
    assert second["generation"] == str(bucket.get_blob(name).generation) != first["generation"]
    assert sidecar_of(bucket, name)[0] == second
    assert second["segments"] == first["segments"]


def test_a_rate_webrtcvad_does_not_take_gets_a_sidecar_that_says_so(bucket, capsys):
    name = put_wav(bucket, bytes(2 * 22050), rate=22050)
    vad.handle_event(event_for(bucket, name))
    body, _ = sidecar_of(bucket, name)
    assert body["skipped"] == "webrtcvad supports 8000, 16000, 32000, 48000 Hz, not 22050 Hz"
    assert (body["sample_rate"], body["duration_seconds"], body["recording"]) == (22050, 1.0, name)
    assert "segments" not in body
    assert events(capsys) == ["vad_skipped"]
    assert vad.handle_event(event_for(bucket, name)) is None  # and a repeat is a no-op


def test_an_erased_recording_is_a_no_op(bucket, capsys):
    name = f"recordings/{uuid.uuid4().hex[:8]}/2025-01-02/20250102T030405.678Z.wav"
    assert vad.handle_event(event_for(bucket, name)) is None
    assert sidecar_of(bucket, name) == (None, None)
    assert events(capsys) == ["vad_recording_gone"]


def during_analysis(monkeypatch, before, after):
    """Run `before()` before the WAV is read and `after()` once it was analyzed (before the
    sidecar is written)."""
    real = vad.analyze

    def wrapped(stream, mode):
        before()
        result = real(stream, mode)
        after()
        return result

    monkeypatch.setattr(vad, "analyze", wrapped)


def _nothing() -> None:
    """A hook that does nothing (the other moment of the parametrized test)."""


@pytest.mark.parametrize("when", ["before the read", "after the analysis"])
def test_erased_while_analyzing_leaves_no_sidecar(bucket, capsys, monkeypatch, when):
    """ "after the analysis": the eraser listed the recording's objects before the sidecar
    existed and deletes the WAV while the sidecar is written; the consumer's check after
    its write sees the WAV gone and deletes the sidecar it wrote."""
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)

    def erase():
        bucket.blob(name).delete()

    during_analysis(
        monkeypatch,
        erase if when == "before the read" else _nothing,
        erase if when == "after the analysis" else _nothing,
    )
    assert vad.handle_event(event_for(bucket, name)) is None  # success: nothing to retry
    assert bucket.get_blob(name) is None
    assert sidecar_of(bucket, name) == (None, None)
    assert events(capsys) == ["vad_recording_gone"]


@pytest.mark.parametrize("when", ["before the read", "after the analysis"])
def test_rewritten_while_analyzing_is_retried(bucket, capsys, monkeypatch, when):
    """No sidecar for a generation that is gone; the error makes Pub/Sub redeliver, and
    the retry describes the new generation."""
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)

    def rewrite():
        bucket.blob(name).upload_from_string(wav.header(rate, len(pcm)) + pcm, content_type="audio/wav")

    during_analysis(
        monkeypatch,
        rewrite if when == "before the read" else _nothing,
        rewrite if when == "after the analysis" else _nothing,
    )
    with pytest.raises(vad.RecordingChanged):
        vad.handle_event(event_for(bucket, name))
    assert sidecar_of(bucket, name) == (None, None)
    assert events(capsys) == ["vad_recording_changed"]
    monkeypatch.setattr(vad, "analyze", REAL_ANALYZE)
    retried = vad.handle_event(event_for(bucket, name))
    assert retried["generation"] == str(bucket.get_blob(name).generation)
    assert sidecar_of(bucket, name)[0] == retried


REAL_ANALYZE = vad.analyze


# --- trying it locally: `python examples/vad/vad_consumer.py gs://...` ---------------------


def test_the_command_line_prints_the_sidecar_it_writes(bucket, gcs_emulator):
    """docs/consumers.md's command, run as a script from the repository root."""
    pcm, rate, start, end = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    uri = f"gs://{bucket.name}/{name}"
    env = {**os.environ, "STORAGE_EMULATOR_HOST": gcs_emulator, "VAD_AGGRESSIVENESS": "3"}

    def run_cli() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "examples/vad/vad_consumer.py", uri],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    proc = run_cli()
    assert proc.returncode == 0, proc.stderr[-3000:]
    logged, printed = proc.stdout.split("\n", 1)
    assert json.loads(logged)["event"] == "vad_analyzed"
    body = json.loads(printed)
    assert body == sidecar_of(bucket, name)[0] and body["aggressiveness"] == 3
    assert_covers_the_speech(body, start, end)
    again = run_cli()
    assert again.returncode == 0 and f"{uri}: nothing written" in again.stdout  # already done


# --- end to end: assembler -> recordings topic -> push -> analyze_recording -> sidecar ----


@pytest.fixture
def served_vad(stack_config, tmp_path):
    """examples/vad/main.py's analyze_recording under the functions-framework CLI, fed by a push subscription
    on the recordings topic (as Eventarc feeds it in production)."""
    with served_on_recordings(
        stack_config,
        "analyze_recording",
        ROOT / "examples" / "vad" / "main.py",
        tmp_path / "functions-framework.log",
        {"VAD_AGGRESSIVENESS": "3"},
        "vad",
    ) as log:
        yield log


def test_a_finalized_recording_gets_its_sidecar_through_pubsub_push(stack_config, served_vad):
    pcm, rate, start, end = speech_with_silence()
    clock = Clock()
    first = clock.now - 3600 * 1_000_000
    second = 2 * rate
    chunks = [
        Chunk("e2e-vad", rate, first + (i // second + 1) * 1_000_000, uuid.uuid4().hex, pcm[i : i + second])
        for i in range(0, len(pcm), second)
    ]
    publish(stack_config, chunks)
    assembler = Assembler(stack_config, clock=clock)
    # The audio is an hour old: once a pass has drained the subscription, the next one
    # finalizes the recording and publishes the event.
    passes = drain(assembler) + [assembler.run_pass()]
    assert sum(p.finalized for p in passes) == 1

    storage = clients.storage_client()
    [wav_blob] = [
        b
        for b in storage.list_blobs(stack_config.recordings_bucket, prefix="recordings/e2e-vad/")
        if b.name.endswith(".wav")
    ]
    bucket = storage.bucket(stack_config.recordings_bucket)
    deadline = time.monotonic() + 15
    while "vad_analyzed" not in served_vad.read_text(errors="replace") and time.monotonic() < deadline:
        time.sleep(0.2)
    body, _ = sidecar_of(bucket, wav_blob.name)
    assert body is not None, served_vad.read_text(errors="replace")[-3000:]
    assert body["generation"] == str(wav_blob.generation) and body["aggressiveness"] == 3
    assert body["duration_seconds"] == round(len(pcm) / (2 * rate), 3)
    assert_covers_the_speech(body, start, end)
    logged = [json.loads(line)["event"] for line in served_vad.read_text().splitlines() if line.startswith("{")]
    assert logged[0] == "vad_analyzed" and set(logged[1:]) <= {"vad_already_done"}, logged


# --- recordings the receiver compacted (runtime/compaction) -----------------------------------


def compact(bucket, name: str, fmt: str = "flac"):
    return Compactor(clients.storage_client(), Settings(Format(fmt))).compact(bucket.name, name)


@pytest.mark.parametrize("fmt", ["flac", "opus"])
def test_a_compacted_recording_gets_its_sidecar(bucket, capsys, fmt):
    """The event comes after compaction replaced the WAV: the .flac or .opus is analyzed,
    and the sidecar names the WAV generation it stands for."""
    pcm, rate, start, end = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    generation = str(bucket.get_blob(name).generation)
    assert compact(bucket, name, fmt).result == "done" and bucket.get_blob(name) is None
    body = vad.handle_event(event_for(bucket, name))
    assert body["generation"] == generation and body["file"] == name.removesuffix(".wav") + f".{fmt}"
    assert body["recording"] == name and body["duration_seconds"] == round(len(pcm) / (2 * rate), 3)
    assert_covers_the_speech(body, start, end)
    assert sidecar_of(bucket, name)[0] == body
    assert vad.handle_event(event_for(bucket, name)) is None  # a repeat: already done
    assert [e for e in events(capsys) if e.startswith("vad")] == ["vad_analyzed", "vad_already_done"]


def test_a_sidecar_of_the_wav_still_counts_after_compaction(bucket, capsys):
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    first = vad.handle_event(event_for(bucket, name))
    compact(bucket, name)
    assert vad.handle_event(event_for(bucket, name)) is None  # same audio: not analyzed again
    assert sidecar_of(bucket, name)[0] == first
    assert [e for e in events(capsys) if e.startswith("vad")] == ["vad_analyzed", "vad_already_done"]


def test_compacted_while_analyzing_the_wav(bucket, monkeypatch):
    """VAD and compaction race on the same event: the WAV is gone when VAD reads it; VAD
    analyzes the FLAC instead, and its check after writing keeps the sidecar."""
    pcm, rate, start, end = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    generation = str(bucket.get_blob(name).generation)
    during_analysis(monkeypatch, lambda: compact(bucket, name) if bucket.get_blob(name) else None, _nothing)
    body = vad.handle_event(event_for(bucket, name))
    assert body is not None and body["generation"] == generation and body["file"].endswith(".flac")
    assert_covers_the_speech(body, start, end)
    assert sidecar_of(bucket, name)[0] == body


def test_erased_after_compaction_leaves_no_sidecar(bucket, monkeypatch):
    pcm, rate, _, _ = speech_with_silence()
    name = put_wav(bucket, pcm, rate)
    compact(bucket, name)
    flac = name.removesuffix(".wav") + ".flac"
    real = vad.analyze_compacted

    def analyze_then_erase(stream, mode):
        result = real(stream, mode)
        bucket.blob(flac).delete()  # the eraser, after listing before the sidecar existed
        return result

    monkeypatch.setattr(vad, "analyze_compacted", analyze_then_erase)
    assert vad.handle_event(event_for(bucket, name)) is None
    assert sidecar_of(bucket, name) == (None, None)
