"""Compaction (compact_recording) against fake-gcs-server, on WAVs the real assembler made.

FLAC must decode to the WAV's PCM byte for byte, Opus must be >10x smaller and pass its
sanity check, both carry the WAV's metadata, and the WAV goes only after that. Repeats,
erases, rewrites and failed checks must leave exactly one copy of the audio.

fake-gcs-server ignores preconditions on deletes (checked: a delete with a wrong
if_generation_match deletes), so `enforced_delete_preconditions` plays Cloud Storage's
rule for the tests that need it: a delete whose generation is not the live one is a 412.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile
from assembly import Clock, audio_of, drain, publish
from cloudevents.http import CloudEvent
from google.api_core import exceptions
from google.cloud import storage
from served import served_on_recordings

from omi_receiver.ops.erase import erase_user
from omi_receiver.runtime import clients, compaction
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.compaction import Compactor, Format, Settings, codec, compactor
from omi_receiver.runtime.config import ConfigError
from omi_receiver.runtime.contract import Chunk

ROOT = Path(__file__).resolve().parents[2]


def speech() -> tuple[bytes, int]:
    with wave.open(str(ROOT / "samples" / "speech-16k.wav")) as w:
        return w.readframes(w.getnframes()), w.getframerate()


def finished_recording(config, uid: str | None = None, pcm: bytes | None = None) -> tuple[storage.Blob, bytes, str]:
    """(WAV blob, its PCM, uid): the speech sample sent as 1 s chunks an hour ago, assembled
    and finalized by the real assembler (`assemble`)."""
    uid, pcm = assemble(config, uid, pcm)
    [blob] = [b for b in bucket_of(config).list_blobs(prefix=f"recordings/{uid}/") if b.name.endswith(".wav")]
    assert blob.metadata["status"] == "final"
    return blob, pcm, uid


def assemble(config, uid: str | None = None, pcm: bytes | None = None) -> tuple[str, bytes]:
    """(uid, PCM) once the assembler has finalized the recording and published its event."""
    uid = uid or f"cmp-{uuid.uuid4().hex[:8]}"
    if pcm is None:
        pcm, _ = speech()
    rate, second = 16000, 32000
    clock = Clock()
    first = clock.now - 3600 * 1_000_000
    chunks = [
        Chunk(uid, rate, first + (i // second + 1) * 1_000_000, uuid.uuid4().hex, pcm[i : i + second])
        for i in range(0, len(pcm), second)
    ]
    publish(config, chunks)
    assembler = Assembler(config, clock=clock)
    passes = drain(assembler) + [assembler.run_pass()]
    assert sum(p.finalized for p in passes) == 1
    return uid, pcm


def bucket_of(config):
    return clients.storage_client().bucket(config.recordings_bucket)


def event_for(bucket_name: str, name: str) -> CloudEvent:
    body = {"uid": name.split("/")[1], "bucket": bucket_name, "name": name}
    message = {"data": base64.b64encode(json.dumps(body).encode()).decode(), "attributes": {"name": name}}
    return CloudEvent(
        {"type": "google.cloud.pubsub.topic.v1.messagePublished", "source": "test"},
        {"message": message, "subscription": "test"},
    )


def logged(capsys) -> list[str]:
    return [json.loads(line)["event"] for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def names_of(config, uid: str) -> list[str]:
    return sorted(b.name for b in bucket_of(config).list_blobs(prefix=f"recordings/{uid}/"))


@pytest.fixture
def use(stack_config, monkeypatch):
    """use("flac"): the function's instance as deployed with COMPACTION_FORMAT=flac."""

    def configure(fmt: str | None) -> None:
        if fmt is None:
            monkeypatch.delenv("COMPACTION_FORMAT", raising=False)
        else:
            monkeypatch.setenv("COMPACTION_FORMAT", fmt)
        compaction.set_compactor(None)  # a fresh instance reads the setting

    yield configure
    compaction.set_compactor(None)


@pytest.fixture
def enforced_delete_preconditions(monkeypatch):
    real = storage.Blob.delete

    def delete(self, *args, if_generation_match=None, **kwargs):
        if if_generation_match is not None:
            live = self.bucket.get_blob(self.name)
            if live is not None and live.generation != if_generation_match:
                raise exceptions.PreconditionFailed(f"{self.name}: generation {live.generation} is live")
        return real(self, *args, if_generation_match=if_generation_match, **kwargs)

    monkeypatch.setattr(storage.Blob, "delete", delete)


# --- the two formats -----------------------------------------------------------------------


def test_flac_decodes_to_the_wavs_pcm_byte_for_byte_and_replaces_it(stack_config, use, capsys):
    wav_blob, pcm, uid = finished_recording(stack_config)
    data = audio_of(wav_blob.download_as_bytes(), 16000)
    assert data == pcm
    use("flac")
    outcome = compaction.handle_event(event_for(stack_config.recordings_bucket, wav_blob.name))
    flac_name = wav_blob.name.removesuffix(".wav") + ".flac"
    assert outcome == compaction.Outcome("done", flac_name)
    assert names_of(stack_config, uid) == [flac_name]  # the WAV is gone

    flac = bucket_of(stack_config).get_blob(flac_name)
    decoded, rate = soundfile.read(io.BytesIO(flac.download_as_bytes()), dtype="int16")
    assert rate == 16000 and decoded.astype("<i2").tobytes() == data
    assert flac.content_type == "audio/flac"
    carried = {k: v for k, v in flac.metadata.items() if k in wav_blob.metadata}
    assert carried == wav_blob.metadata  # every WAV field, unchanged
    assert flac.metadata["source_generation"] == str(wav_blob.generation)
    assert flac.metadata["pcm_bytes"] == str(len(data)) and flac.metadata["compaction"] == "flac"
    assert flac.size < 0.7 * wav_blob.size
    assert logged(capsys)[-2:] == ["compaction_verified", "compaction_done"]


def test_opus_is_over_ten_times_smaller_and_checked(stack_config, use):
    wav_blob, pcm, uid = finished_recording(stack_config)
    use("opus")
    outcome = compaction.handle_event(event_for(stack_config.recordings_bucket, wav_blob.name))
    assert outcome.result == "done" and outcome.target.endswith(".opus")
    assert names_of(stack_config, uid) == [outcome.target]
    opus = bucket_of(stack_config).get_blob(outcome.target)
    assert opus.content_type == "audio/ogg" and opus.metadata["compaction"] == "opus"
    assert opus.size * 10 < wav_blob.size, (opus.size, wav_blob.size)
    decoded, rate = soundfile.read(io.BytesIO(opus.download_as_bytes()), dtype="int16")
    assert rate == 16000 and abs(len(decoded) - len(pcm) // 2) <= 320  # within a 20 ms frame
    original = np.frombuffer(pcm, dtype="<i2").astype(float)
    n = min(len(original), len(decoded))
    assert np.corrcoef(original[:n], decoded[:n].astype(float))[0, 1] > 0.95  # measured 0.988


# --- off, bad events, repeats ----------------------------------------------------------------


def test_off_by_default_leaves_the_wav(stack_config, use, capsys):
    wav_blob, _, uid = finished_recording(stack_config)
    use(None)
    assert compaction.get_compactor().settings == Settings(Format.OFF)
    outcome = compaction.handle_event(event_for(stack_config.recordings_bucket, wav_blob.name))
    assert outcome == compaction.Outcome("off")
    assert names_of(stack_config, uid) == [wav_blob.name]
    assert [e for e in logged(capsys) if e.startswith("compaction")] == []


def test_a_bad_setting_is_refused_by_name():
    with pytest.raises(ConfigError, match="COMPACTION_FORMAT='mp3' must be one of off, flac, opus"):
        Settings.from_env({"COMPACTION_FORMAT": "mp3"})
    assert Settings.from_env({"COMPACTION_FORMAT": " FLAC "}).format is Format.FLAC
    assert Settings.from_env({}).format is Format.OFF


@pytest.mark.parametrize(
    "data",
    [b"not json", json.dumps({"bucket": "b", "name": "state/alice.json"}).encode(), json.dumps({"name": 1}).encode()],
)
def test_an_event_that_can_never_work_is_acknowledged(stack_config, use, capsys, data):
    use("flac")
    event = CloudEvent(
        {"type": "t", "source": "s"}, {"message": {"data": base64.b64encode(data).decode()}, "subscription": "s"}
    )
    assert compaction.handle_event(event) is None
    assert logged(capsys) == ["compaction_bad_event"]


def test_a_repeated_event_after_success_changes_nothing(stack_config, use, capsys):
    wav_blob, _, uid = finished_recording(stack_config)
    use("flac")
    event = event_for(stack_config.recordings_bucket, wav_blob.name)
    first = compaction.handle_event(event)
    before = bucket_of(stack_config).get_blob(first.target)
    capsys.readouterr()
    assert compaction.handle_event(event).result == "already_done"
    after = bucket_of(stack_config).get_blob(first.target)
    assert after.generation == before.generation and names_of(stack_config, uid) == [first.target]
    assert logged(capsys) == ["compaction_already_done"]


def test_a_delivery_that_died_after_the_upload_is_finished_without_encoding_again(stack_config, monkeypatch):
    wav_blob, _, uid = finished_recording(stack_config)
    worker = Compactor(clients.storage_client(), Settings(Format.FLAC))

    def die(*args, **kwargs):
        raise KeyboardInterrupt("the instance died")

    with monkeypatch.context() as m:
        m.setattr(Compactor, "_delete_wav", die)
        with pytest.raises(KeyboardInterrupt):
            worker.compact(stack_config.recordings_bucket, wav_blob.name)
        assert len(names_of(stack_config, uid)) == 2  # both, for now

    def no_encoding(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(codec, "encode", no_encoding)
    outcome = worker.compact(stack_config.recordings_bucket, wav_blob.name)
    assert outcome.result == "done" and names_of(stack_config, uid) == [outcome.target]


def test_two_deliveries_at_once_leave_one_compacted_copy(stack_config, monkeypatch):
    """The other delivery finishes while this one encodes: this one's upload loses its
    precondition, finds the copy describes the same WAV, and its delete finds the WAV gone."""
    wav_blob, _, uid = finished_recording(stack_config)
    worker = Compactor(clients.storage_client(), Settings(Format.FLAC))
    real, other = codec.verify, []

    def racing(*args):
        if not other:
            monkeypatch.setattr(codec, "verify", real)
            other.append(worker.compact(stack_config.recordings_bucket, wav_blob.name))
        return real(*args)

    monkeypatch.setattr(codec, "verify", racing)
    outcome = worker.compact(stack_config.recordings_bucket, wav_blob.name)
    assert other[0].result == "done" and outcome.result == "already_done"
    assert names_of(stack_config, uid) == [outcome.target]


# --- what must keep the WAV ------------------------------------------------------------------


def test_a_failed_check_keeps_the_wav_and_is_not_retried(stack_config, monkeypatch, capsys):
    """The encoded file comes out truncated (a broken encoder, a full /tmp): the check fails,
    nothing is uploaded, the WAV stays, and the event is acknowledged."""
    wav_blob, _, uid = finished_recording(stack_config)
    real = codec.encode

    def truncating(stream, target, fmt):
        source = real(stream, target, fmt)
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size // 2)
        return source

    monkeypatch.setattr(codec, "encode", truncating)
    outcome = Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(
        stack_config.recordings_bucket, wav_blob.name
    )
    assert outcome.result == "failed"
    assert names_of(stack_config, uid) == [wav_blob.name]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [error] = [line for line in lines if line["event"] == "compaction_failed"]
    assert error["severity"] == "ERROR" and "decode" in error["error"]


def test_opus_that_does_not_sound_like_the_wav_is_refused(stack_config, monkeypatch):
    """The Opus check is a bound, not a formality: audio at half the gain fails it."""
    wav_blob, _, uid = finished_recording(stack_config)
    real = codec._open_for_writing

    class HalfGain:
        def __init__(self, out):
            self.out = out

        def __enter__(self):
            self.out.__enter__()
            return self

        def __exit__(self, *exc):
            return self.out.__exit__(*exc)

        def write(self, samples):
            self.out.write((samples // 2).astype("<i2"))

    monkeypatch.setattr(codec, "_open_for_writing", lambda *a: HalfGain(real(*a)))
    outcome = Compactor(clients.storage_client(), Settings(Format.OPUS)).compact(
        stack_config.recordings_bucket, wav_blob.name
    )
    assert outcome.result == "failed" and names_of(stack_config, uid) == [wav_blob.name]


def test_a_wav_rewritten_before_the_delete_is_kept_and_retried(
    stack_config, monkeypatch, enforced_delete_preconditions, capsys
):
    """A repeated finalization rewrites the WAV after it was read: the delete's generation
    precondition keeps the new one, the error makes Eventarc redeliver, and the retry
    replaces the compacted copy with one of the new generation."""
    wav_blob, pcm, uid = finished_recording(stack_config)
    bucket = bucket_of(stack_config)
    worker = Compactor(clients.storage_client(), Settings(Format.FLAC))
    real = Compactor._delete_wav

    def rewrite_first(self, bucket_, recording, sibling):
        copy = bucket.blob(recording.name)
        copy.metadata = recording.metadata
        copy.upload_from_string(recording.download_as_bytes(), content_type="audio/wav")
        return real(self, bucket_, recording, sibling)

    monkeypatch.setattr(Compactor, "_delete_wav", rewrite_first)
    with pytest.raises(compaction.WavChanged):
        worker.compact(stack_config.recordings_bucket, wav_blob.name)
    rewritten = bucket.get_blob(wav_blob.name)
    assert rewritten is not None and rewritten.generation != wav_blob.generation
    assert "compaction_wav_changed" in logged(capsys)

    monkeypatch.setattr(Compactor, "_delete_wav", real)
    outcome = worker.compact(stack_config.recordings_bucket, wav_blob.name)  # the redelivery
    assert outcome.result == "done" and names_of(stack_config, uid) == [outcome.target]
    flac = bucket.get_blob(outcome.target)
    assert flac.metadata["source_generation"] == str(rewritten.generation)
    decoded, _ = soundfile.read(io.BytesIO(flac.download_as_bytes()), dtype="int16")
    assert decoded.astype("<i2").tobytes() == pcm


def test_without_the_precondition_the_rewritten_wav_would_be_lost(stack_config, monkeypatch):
    """What the generation precondition is for, shown on the emulator that ignores it: the
    same rewrite, and the new WAV is deleted. (Documents the emulator, not our code.)"""
    wav_blob, _, uid = finished_recording(stack_config)
    bucket = bucket_of(stack_config)
    real = Compactor._delete_wav

    def rewrite_first(self, bucket_, recording, sibling):
        bucket.blob(recording.name).upload_from_string(recording.download_as_bytes(), content_type="audio/wav")
        return real(self, bucket_, recording, sibling)

    monkeypatch.setattr(Compactor, "_delete_wav", rewrite_first)
    Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(stack_config.recordings_bucket, wav_blob.name)
    assert bucket.get_blob(wav_blob.name) is None


# --- erases ----------------------------------------------------------------------------------


def test_an_erased_recording_is_done(stack_config, use, capsys):
    use("flac")
    name = f"recordings/gone-{uuid.uuid4().hex[:6]}/2025-01-02/20250102T030405.678Z.wav"
    assert compaction.handle_event(event_for(stack_config.recordings_bucket, name)).result == "gone"
    assert logged(capsys) == ["compaction_gone"]


def test_erased_while_compacting_leaves_nothing(stack_config, monkeypatch):
    """The eraser lists, deletes and lists again while the audio is being encoded; the
    copy uploaded after that finds the WAV gone and the user's erase marker, and goes too."""
    wav_blob, _, uid = finished_recording(stack_config)
    real = codec.verify

    def erase_then_verify(*args):
        erase_user(Assembler(stack_config), uid)
        return real(*args)

    monkeypatch.setattr(codec, "verify", erase_then_verify)
    outcome = Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(
        stack_config.recordings_bucket, wav_blob.name
    )
    assert outcome.result == "gone"
    assert names_of(stack_config, uid) == []


def test_erased_while_a_delivery_died_before_deleting_leaves_nothing(stack_config, monkeypatch):
    """As above, but the delivery that uploaded the copy died before it deleted the WAV: the
    next delivery finds the WAV gone and the copy there, and must not take that for a
    finished compaction while the copy is the erased user's audio."""
    wav_blob, _, uid = finished_recording(stack_config)
    real = codec.verify

    def erase_then_verify(*args):
        erase_user(Assembler(stack_config), uid)
        return real(*args)

    def died(*_):
        raise RuntimeError("the instance died before step 5")

    with monkeypatch.context() as m:
        m.setattr(codec, "verify", erase_then_verify)
        m.setattr(Compactor, "_delete_wav", died)
        with pytest.raises(RuntimeError, match="died"):
            Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(
                stack_config.recordings_bucket, wav_blob.name
            )
    assert names_of(stack_config, uid) == [compactor.compacted_name(wav_blob.name, Format.FLAC)]
    outcome = Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(
        stack_config.recordings_bucket, wav_blob.name
    )
    assert outcome.result == "gone"
    assert names_of(stack_config, uid) == []


def test_erase_deletes_a_compacted_recording_and_its_sidecar(stack_config):
    wav_blob, _, uid = finished_recording(stack_config)
    Compactor(clients.storage_client(), Settings(Format.OPUS)).compact(stack_config.recordings_bucket, wav_blob.name)
    bucket_of(stack_config).blob(wav_blob.name.removesuffix(".wav") + ".vad.json").upload_from_string("{}")
    assert len(names_of(stack_config, uid)) == 2
    erased = erase_user(Assembler(stack_config), uid)
    assert names_of(stack_config, uid) == [] and not erased.failed


# --- the deploy boundary ---------------------------------------------------------------------


def test_importing_the_package_does_not_load_soundfile():
    """main.py imports it for every function: the codec loads on the first compaction only."""
    code = (
        "import sys, omi_receiver.runtime.compaction; "
        "print(sorted(m for m in ('soundfile', 'numpy') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_compacted_name():
    assert compactor.compacted_name("recordings/a/d/x.wav", Format.OPUS) == "recordings/a/d/x.opus"
    assert compactor.compacted_name("recordings/a/d/x-late-1.wav", Format.FLAC) == "recordings/a/d/x-late-1.flac"


# --- end to end: assembler -> recordings topic -> push -> compact_recording (main.py) --------


@pytest.fixture
def served_compactor(stack_config, tmp_path):
    """main.py's compact_recording under the functions-framework CLI with
    COMPACTION_FORMAT=flac, fed by a push subscription on the recordings topic (as Eventarc
    feeds it in production)."""
    with served_on_recordings(
        stack_config,
        "compact_recording",
        ROOT / "main.py",
        tmp_path / "functions-framework.log",
        {"COMPACTION_FORMAT": "flac"},
        "compaction",
    ) as log:
        yield log


def test_a_finalized_recording_is_compacted_through_pubsub_push(stack_config, served_compactor):
    uid, pcm = assemble(stack_config)  # the push may compact the WAV at any moment now
    deadline = time.monotonic() + 20

    def only_the_flac(names: list[str]) -> bool:
        return len(names) == 1 and names[0].endswith(".flac")

    # Until the WAV is deleted too: the copy is uploaded first, so for a moment both are there.
    while time.monotonic() < deadline and not only_the_flac(names_of(stack_config, uid)):
        time.sleep(0.2)
    names = names_of(stack_config, uid)
    assert only_the_flac(names), (names, served_compactor.read_text(errors="replace")[-3000:])
    [flac_name] = names
    flac = bucket_of(stack_config).get_blob(flac_name)
    decoded, _ = soundfile.read(io.BytesIO(flac.download_as_bytes()), dtype="int16")
    assert decoded.astype("<i2").tobytes() == pcm
    assert flac.metadata["status"] == "final" and flac.metadata["source_generation"].isdigit()
    events = [json.loads(line)["event"] for line in served_compactor.read_text().splitlines() if line.startswith("{")]
    assert "compaction_done" in events and "compaction_failed" not in events, events


def test_an_open_or_too_long_recording_keeps_its_wav(stack_config, monkeypatch, capsys):
    wav_blob, _, uid = finished_recording(stack_config)
    worker = Compactor(clients.storage_client(), Settings(Format.OPUS))
    with monkeypatch.context() as m:
        m.setitem(compactor.MAX_SECONDS, Format.OPUS, 10)  # the sample is 29.7 s
        assert worker.compact(stack_config.recordings_bucket, wav_blob.name).result == "skipped"
    blob = bucket_of(stack_config).get_blob(wav_blob.name)
    blob.metadata = {**blob.metadata, "status": "open"}
    blob.patch()
    assert worker.compact(stack_config.recordings_bucket, wav_blob.name).result == "skipped"
    assert names_of(stack_config, uid) == [wav_blob.name]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    reasons = [line["reason"] for line in lines if line["event"] == "compaction_skipped"]
    assert "over what one run compacts" in reasons[0] and "still open" in reasons[1]
