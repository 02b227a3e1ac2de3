"""The `omi-receiver` command against the emulators: list, download, stats, erase (also
while audio streams in through ingest) and the clear errors. dlq is in test_cli_dlq.py."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from assembly import audio_of, drain, joined, publish, recordings, stream
from google.cloud.storage.fileio import BlobReader
from test_ingest_pubsub import post

from omi_receiver.ops import cli
from omi_receiver.ops.catalog import Catalog, CatalogError
from omi_receiver.ops.erase import erase_user
from omi_receiver.runtime import clients, logs
from omi_receiver.runtime.assembler import ERASE_MARKER_KEEP_US, Assembler, LeaseBusy
from omi_receiver.runtime.assembler.recording import WORK_PREFIX, state_name
from omi_receiver.runtime.compaction import Compactor, Format, Settings
from omi_receiver.runtime.contract import UID_PATTERN, now_us

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()  # what came before (the assembler's logs)
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def two_recordings(config):
    """uid "ann": one finalized recording an hour ago, then one still open (recent enough
    not to be finalized as idle)."""
    first = stream("ann", 4, start_us=now_us() - 3_600_000_000, seed=1)
    second = stream("ann", 3, start_us=now_us() - 5_000_000, seed=2)
    assembler = Assembler(config)
    publish(config, first + second)
    drain(assembler)
    return first, second


def test_list_shows_newest_first_with_status_and_json(env, capsys):
    first, second = two_recordings(env)
    code, out, _ = run(capsys, "recordings", "list", "--uid", "ann")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["START", "(UTC)", "DURATION", "SIZE", "RATE"]
    assert "open" in lines[1] and "finalized" in lines[2] and len(lines) == 3  # newest first
    assert "0:00:03" in lines[1] and "0:00:04" in lines[2] and "16000 Hz" in lines[1]

    code, out, _ = run(capsys, "recordings", "list", "--uid", "ann", "--json")
    rows = json.loads(out)
    assert [r["status"] for r in rows] == ["open", "finalized"]
    assert [r["duration_seconds"] for r in rows] == [3.0, 4.0]
    assert rows[1]["bytes"] == 44 + len(joined(first))

    later = rows[0]["start"][:19]  # only the open one starts at or after it
    code, out, _ = run(capsys, "recordings", "list", "--uid", "ann", "--since", later, "--json")
    assert [r["id"] for r in json.loads(out)] == [rows[0]["id"]]


def test_download_verifies_and_writes_the_exact_wavs(env, capsys, tmp_path):
    first, second = two_recordings(env)
    code, out, err = run(capsys, "recordings", "download", "--uid", "ann", "-o", str(tmp_path), "-q")
    assert code == 0, err
    files = sorted(tmp_path.glob("*.wav"))
    assert len(files) == 2 and "verified" in out
    assert audio_of(files[0].read_bytes(), 16000) == joined(first)
    assert audio_of(files[1].read_bytes(), 16000) == joined(second)
    assert not list(tmp_path.glob("*.part"))

    one = json.loads(run(capsys, "recordings", "list", "--uid", "ann", "--json")[1])[1]["id"]
    single = tmp_path / "one"
    assert run(capsys, "recordings", "download", "--uid", "ann", "--id", one, "-o", str(single), "-q")[0] == 0
    assert [p.name for p in single.iterdir()] == [f"{one}.wav"]


def test_download_refuses_a_corrupted_transfer(env, tmp_path, monkeypatch):
    two_recordings(env)
    catalog = Catalog(clients.storage_client(), env.recordings_bucket)
    info = catalog.recordings("ann")[0]
    # The emulator cannot corrupt a transfer: flip one bit of what the reader hands over.
    real_read = BlobReader.read

    def corrupted_read(self, size=-1):
        at_start = self.tell() == 0
        data = real_read(self, size)
        return bytes([data[0] ^ 1]) + data[1:] if at_start and data else data

    monkeypatch.setattr(BlobReader, "read", corrupted_read)
    with pytest.raises(CatalogError, match="CRC32C"):
        catalog.download(info, tmp_path)
    assert list(tmp_path.iterdir()) == []  # neither the file nor its .part


def test_download_of_an_open_recording_that_grows_meanwhile_gets_a_consistent_copy(env, tmp_path):
    chunks = stream("grow", 3, start_us=now_us() - 5_000_000, seed=3)
    assembler = Assembler(env)
    publish(env, chunks)
    drain(assembler)
    catalog = Catalog(clients.storage_client(), env.recordings_bucket)
    listed = catalog.recordings("grow")[0]
    more = stream("grow", 2, start_us=chunks[-1].received_at_us, seed=4)
    publish(env, more)
    drain(assembler)  # a flush replaced the generation that was listed
    path, got = catalog.download(listed, tmp_path)
    # (fake-gcs-server keeps the generation on compose; real GCS makes a new one, and the
    # listed generation then answers 404: both end in taking the newest.)
    assert (got.bytes, got.crc32c) != (listed.bytes, listed.crc32c)
    assert audio_of(path.read_bytes(), 16000) == joined(chunks + more)


def test_stats_counts_users_recordings_hours_and_open(env, capsys):
    two_recordings(env)
    publish(env, stream("bob", 2, start_us=now_us() - 4_000_000, seed=5))
    drain(Assembler(env))
    code, out, _ = run(capsys, "recordings", "stats", "--json")
    stats = json.loads(out)
    assert (stats["users"], stats["recordings"], stats["open_recordings"]) == (2, 3, 2)
    assert stats["hours"] == round(9 / 3600, 3)
    assert stats["bytes"] == 3 * 44 + 9 * 32_000
    code, out, _ = run(capsys, "recordings", "stats")
    assert "users" in out and "open recordings" in out


def test_clear_errors_for_unknown_uid_empty_bucket_missing_settings(env, capsys, monkeypatch):
    code, _, err = run(capsys, "recordings", "list", "--uid", "nobody")
    assert code == 1 and "holds no recordings yet" in err
    code, _, err = run(capsys, "recordings", "stats")
    assert code == 0
    two_recordings(env)
    code, _, err = run(capsys, "recordings", "list", "--uid", "nobody")
    assert code == 1 and "unknown uid 'nobody'" in err
    code, _, err = run(capsys, "recordings", "download", "--uid", "ann", "--id", "19990101T000000.000Z")
    assert code == 1 and "no recording with id" in err
    monkeypatch.setenv("RECORDINGS_BUCKET", "no-such-bucket")
    code, _, err = run(capsys, "recordings", "list", "--uid", "ann")
    assert code == 1 and "bucket no-such-bucket does not exist" in err
    monkeypatch.delenv("RECORDINGS_BUCKET")
    code, _, err = run(capsys, "recordings", "list", "--uid", "ann")
    assert code == 1 and "RECORDINGS_BUCKET" in err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["recordings", "list", "--uid", "ann", "--since", "yesterday"])
    assert exit_.value.code == 2


def test_missing_credentials_is_a_clear_error(tmp_path, monkeypatch, capsys):
    """Real GCP mode (no emulator variables) with no credentials anywhere."""
    monkeypatch.setattr(logs, "_to_stderr_above_info", False)
    for name in ("STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("RECORDINGS_BUCKET", "some-bucket")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "some-project")
    clients.set_storage(None)
    try:
        code, _, err = run(capsys, "recordings", "list", "--uid", "ann")
    finally:
        clients.set_storage(None)
    assert code == 1 and "no Google Cloud credentials" in err


def test_erase_deletes_everything_of_the_user_and_nothing_else(env, capsys, monkeypatch):
    two_recordings(env)
    publish(env, stream("bob", 2, start_us=now_us() - 4_000_000, seed=5))
    drain(Assembler(env))
    bucket = clients.storage_client().bucket(env.recordings_bucket)
    bucket.blob("recordings/ann/2026-01-01/x.vad.json").upload_from_string(b"{}")  # a consumer's sidecar
    bob_before = recordings(env, "bob")

    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    code, _, err = run(capsys, "recordings", "erase", "--uid", "ann")
    assert code == 1 and "--yes" in err  # no confirmation, nothing erased
    assert recordings(env, "ann")

    code, out, err = run(capsys, "recordings", "erase", "--uid", "ann", "--yes")
    assert code == 0, err
    code, _, err = run(capsys, "recordings", "list", "--uid", "ann")
    assert code == 1 and "or they were erased" in err
    assert "deleted recordings/ann/" in out and "x.vad.json" in out
    names = [b.name for b in clients.storage_client().list_blobs(env.recordings_bucket)]
    assert not [n for n in names if n.startswith(("recordings/ann/", f"{WORK_PREFIX}ann/"))]
    assert state_name("ann") in names  # the marker
    assert recordings(env, "bob") == bob_before

    # Chunks received before the erase that arrive only now are dropped; later ones kept.
    late_arrivals = stream("ann", 2, start_us=now_us() - 10_000_000, seed=6)
    publish(env, late_arrivals)
    time.sleep(1.5)  # Cloud Storage's clock (the marker) and this one agree to well within this
    after = stream("ann", 2, start_us=now_us(), seed=7)
    publish(env, after)
    stats = drain(Assembler(env))
    assert sum(s.erased for s in stats) == 2
    [(name, blob, meta)] = recordings(env, "ann")
    assert audio_of(blob, 16000) == joined(after)


def test_erase_asks_and_accepts_only_the_uid(env, capsys, monkeypatch):
    two_recordings(env)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    code, out, _ = run(capsys, "recordings", "erase", "--uid", "ann")
    assert code == 1 and "nothing erased" in out and len(recordings(env, "ann")) == 2
    monkeypatch.setattr("builtins.input", lambda prompt: "ann")
    code, out, _ = run(capsys, "recordings", "erase", "--uid", "ann")
    assert code == 0 and recordings(env, "ann") == []


@pytest.mark.slow
def test_erase_while_audio_streams_in_leaves_only_whole_valid_recordings(env, capsys):
    """A device streams through ingest while passes run and the user is erased midway:
    afterwards every WAV of the user is valid and holds exactly the chunks received after
    the erase, in order, nothing lost, nothing half."""
    config = dataclasses.replace(env, settle_seconds=0.0)
    sent: list[tuple[int, bytes]] = []  # (received_at from the 200 order, body)
    stop = threading.Event()

    def device():
        i = 0
        while not stop.is_set():
            body = bytes([i % 251, (i * 7) % 251]) * 4000  # 0.25 s of distinct audio
            before = now_us()
            status, _, _ = post(
                config,
                query="sample_rate=16000&uid=eve",
                body=body,
                headers={"Idempotency-Key": f"00000000-0000-4000-8000-{i:012d}"},
            )
            assert status == 200
            sent.append((before, body))
            i += 1
            time.sleep(0.05)

    def passes():
        assembler = Assembler(config)
        while not stop.is_set():
            assembler.run_pass()

    threads = [threading.Thread(target=device), threading.Thread(target=passes)]
    for t in threads:
        t.start()
    try:
        time.sleep(4)
        eraser = Assembler(config)
        for _ in range(100):
            try:
                erased = erase_user(eraser, "eve")
                break
            except LeaseBusy:  # a pass is flushing eve: as the CLI does, try again
                time.sleep(0.1)
        time.sleep(4)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    drain(Assembler(config))
    assert erased.deleted and not erased.failed

    kept = recordings(config, "eve")
    assert kept, "audio received after the erase must be kept"
    # Chunks received after the erase instant, each exactly once, in order; a chunk whose
    # request straddled the instant may fall either side, so compare from the first kept one.
    audio = b"".join(audio_of(blob, 16000) for _, blob, _ in kept)
    after = [body for started, body in sent if started >= erased.erased_before_us]
    straddling = [body for started, body in sent if started < erased.erased_before_us][-2:]
    expected_tail = b"".join(after)
    assert audio.endswith(expected_tail)
    assert len(audio) - len(expected_tail) in {sum(len(b) for b in straddling[k:]) for k in range(3)}
    leftovers = [
        b.name for b in clients.storage_client().list_blobs(config.recordings_bucket, prefix=f"{WORK_PREFIX}eve/")
    ]
    state = json.loads(
        clients.storage_client().bucket(config.recordings_bucket).blob(state_name("eve")).download_as_bytes()
    )
    open_id = state["open"]["id"] if state["open"] else None
    assert all(name.split("/")[2] == open_id for name in leftovers)  # only the open recording's temporaries


def _state_blob(config, uid):
    return clients.storage_client().bucket(config.recordings_bucket).get_blob(state_name(uid))


def test_an_erase_marker_is_deleted_by_a_pass_once_nothing_from_before_the_erase_can_arrive(env):
    two_recordings(env)
    erased = erase_user(Assembler(env), "ann")
    marker = _state_blob(env, "ann")
    assert marker.metadata["erased_before_us"] == str(erased.erased_before_us)  # found by the listing
    # Young: every pass keeps it (chunks from before the erase may still come).
    assert Assembler(env).forget_erase_markers() == 0
    drain(Assembler(env))
    assert _state_blob(env, "ann") is not None

    later = Assembler(env, clock=lambda: now_us() + ERASE_MARKER_KEEP_US + 60_000_000)
    passes = drain(later)
    assert _state_blob(env, "ann") is None, "the uid must not outlive the erase for good"
    assert not [
        b.name
        for b in clients.storage_client().list_blobs(env.recordings_bucket)
        if "/ann/" in b.name or b.name.endswith("/ann.json")
    ]
    assert passes  # a tick's pass did it, not only a direct call

    # The user streams again later: a fresh state, a new recording.
    publish(env, stream("ann", 2, start_us=erased.erased_before_us, seed=5))
    drain(Assembler(env))
    assert len(recordings(env, "ann")) == 1


def test_a_user_who_streamed_after_the_erase_keeps_the_state(env):
    two_recordings(env)
    erased = erase_user(Assembler(env), "ann")
    publish(env, stream("ann", 2, start_us=erased.erased_before_us, seed=6))  # received after it
    drain(Assembler(env))
    assert "erased_before_us" not in _state_blob(env, "ann").metadata
    later = Assembler(env, clock=lambda: now_us() + ERASE_MARKER_KEEP_US + 60_000_000)
    assert later.forget_erase_markers() == 0
    state = json.loads(_state_blob(env, "ann").download_as_bytes())
    assert state["recent"] and state["erased_before_us"]  # still drops pre-erase stragglers


def test_console_script_and_python_m_are_installed(env):
    environ = {**os.environ}
    for args in (["omi-receiver"], [sys.executable, "-m", "omi_receiver"]):
        if args == ["omi-receiver"]:
            args = [str(Path(sys.executable).parent / "omi-receiver")]
        done = subprocess.run(
            [*args, "recordings", "stats", "--json"], env=environ, capture_output=True, text=True, timeout=60, cwd=ROOT
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["bucket"] == env.recordings_bucket


def test_erase_removes_a_sidecar_a_consumer_wrote_after_the_listing(env):
    two_recordings(env)
    bucket = clients.storage_client().bucket(env.recordings_bucket)
    wav_name = recordings(env, "ann")[0][0]
    sidecar = wav_name.removesuffix(".wav") + ".vad.json"

    def consumer_writes_during_the_deletes(step: str) -> None:
        if step == "delete" and not bucket.blob(sidecar).exists():
            bucket.blob(sidecar).upload_from_string(b"{}")  # analyzed before the WAV went

    erased = erase_user(Assembler(env, hook=consumer_writes_during_the_deletes), "ann")
    assert sidecar in erased.deleted and not erased.failed
    assert not [b.name for b in clients.storage_client().list_blobs(env.recordings_bucket, prefix="recordings/ann/")]


# --- what the operator can get wrong: refused before anything is touched, one line each ---


@pytest.fixture
def quiet_logs(monkeypatch):
    monkeypatch.setattr(logs, "_to_stderr_above_info", False)  # cli.main sets it for the process


def usage_error(capsys, *argv) -> str:
    """Run the CLI expecting argparse's usage error (exit status 2); its stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("uid", ["carol/2026-11-29", "carol/", "../carol", "", "carol 2", "c" * 129])
@pytest.mark.parametrize("command", [["list"], ["download", "-q"], ["erase", "--yes"]])
def test_a_uid_ingest_would_refuse_is_a_usage_error(quiet_logs, capsys, command, uid):
    err = usage_error(capsys, "recordings", *command, "--uid", uid)
    [line] = err.splitlines()
    assert line.startswith("omi-receiver: error: --uid ") and UID_PATTERN.pattern in line


def test_a_uid_with_a_slash_cannot_reach_into_another_users_recordings(env, capsys):
    """`carol/<day>` used to list and erase carol's recordings of that day (and write a
    state object `state/carol/<day>.json` while carol's own state stayed unmarked)."""
    publish(env, stream("carol", 3, start_us=now_us() - 3_600_000_000, seed=8))
    drain(Assembler(env))
    [(name, _, _)] = recordings(env, "carol")
    day = name.split("/")[2]
    before = sorted(b.name for b in clients.storage_client().list_blobs(env.recordings_bucket))
    for argv in (["list"], ["erase", "--yes"], ["download", "-q", "-o", "/nonexistent-omi-test"]):
        usage_error(capsys, "recordings", *argv, "--uid", f"carol/{day}")
    assert sorted(b.name for b in clients.storage_client().list_blobs(env.recordings_bucket)) == before
    assert len(recordings(env, "carol")) == 1


def test_end_of_input_at_the_erase_prompt_erases_nothing(env, capsys, monkeypatch):
    two_recordings(env)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)

    def end_of_input(prompt):  # what input() does when stdin ends (Ctrl-D)
        raise EOFError

    monkeypatch.setattr("builtins.input", end_of_input)
    code, out, err = run(capsys, "recordings", "erase", "--uid", "ann")
    assert code == 1 and "nothing erased" in out and len(recordings(env, "ann")) == 2


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    [line] = err.strip().splitlines()
    assert line.startswith("error: "), line
    return line


def test_download_to_a_place_it_cannot_write_is_one_line_and_leaves_no_part_file(env, capsys, tmp_path):
    two_recordings(env)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")
    ids = [r["id"] for r in json.loads(run(capsys, "recordings", "list", "--uid", "ann", "--json")[1])]
    taken = tmp_path / "taken"
    (taken / f"{ids[0]}.wav").mkdir(parents=True)  # the target name is a directory
    for output in (a_file, a_file / "below", Path("/proc"), taken):  # /proc: even root cannot create there
        code, out, err = run(capsys, "recordings", "download", "--uid", "ann", "-q", "-o", str(output))
        assert code == 1, (output, out, err)
        assert str(output) in _one_error_line(err)
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("*.wav.part"))
    assert a_file.read_text() == "not a directory"


def test_a_storage_emulator_host_without_its_scheme_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(logs, "_to_stderr_above_info", False)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")  # written like PUBSUB_EMULATOR_HOST
    monkeypatch.setenv("RECORDINGS_BUCKET", "some-bucket")
    clients.set_storage(None)
    try:
        code, _, err = run(capsys, "recordings", "stats")
    finally:
        clients.set_storage(None)
    assert code == 1 and "STORAGE_EMULATOR_HOST" in _one_error_line(err) and "http://" in err


# --- services out of reach: one line within seconds, not a traceback after two minutes ---


def cli_processes(environ: dict, commands: list[list[str]], timeout: float = 60) -> list[tuple]:
    """Each command as its own `python -m omi_receiver` process, all at once (each waits
    out its own deadline): [(exit status, stdout, stderr, seconds it took)]."""
    from concurrent.futures import ThreadPoolExecutor

    def one(argv):
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "omi_receiver", *argv],
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
        return done.returncode, done.stdout, done.stderr, time.monotonic() - started

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(one, commands))


def out_of_reach_env(storage: str, pubsub: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_EMULATOR_HOST")}
    return {
        **environ,
        "STORAGE_EMULATOR_HOST": storage,
        "PUBSUB_EMULATOR_HOST": pubsub,
        "RECORDINGS_BUCKET": "omi-unreachable",
        "GOOGLE_CLOUD_PROJECT": "omi-test",
    }


def assert_fails_fast_in_one_line(result, *named: str) -> None:
    code, out, err, seconds = result
    assert code == 1, (code, out, err)
    line = _one_error_line(err)
    for text in named:
        assert text in line, line
    assert seconds < 20, (seconds, line)


@pytest.mark.slow
def test_cloud_storage_out_of_reach_fails_within_seconds_in_one_line(dead_port, tmp_path):
    port, reason = dead_port
    host = f"http://127.0.0.1:{port}"
    environ = out_of_reach_env(host, f"127.0.0.1:{port}")
    commands = [
        ["recordings", "list", "--uid", "ann"],
        ["recordings", "stats"],
        ["recordings", "download", "--uid", "ann", "-o", str(tmp_path)],
        ["recordings", "erase", "--uid", "ann", "--yes"],
    ]
    for result in cli_processes(environ, commands):
        assert_fails_fast_in_one_line(result, f"STORAGE_EMULATOR_HOST={host}", "bucket omi-unreachable", reason)
    assert list(tmp_path.iterdir()) == []


# --- compacted recordings (runtime/compaction) -----------------------------------------------


def test_compacted_recordings_are_listed_counted_and_downloaded(env, capsys, tmp_path):
    """ "ann"'s finalized recording compacted to FLAC, her open one still a WAV: list shows
    both with their format and true duration, stats counts them once, download writes the
    FLAC as stored (its CRC32C checked), and --wav decodes it to the original samples."""
    first, _ = two_recordings(env)
    [finalized] = [r for r in recordings(env, "ann") if r[2]["status"] == "final"]
    outcome = Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(env.recordings_bucket, finalized[0])
    assert outcome.result == "done"

    rows = json.loads(run(capsys, "recordings", "list", "--uid", "ann", "--json")[1])
    assert [(r["format"], r["duration_seconds"], r["status"]) for r in rows] == [
        ("wav", 3.0, "open"),
        ("flac", 4.0, "finalized"),
    ]
    flac = clients.storage_client().bucket(env.recordings_bucket).get_blob(outcome.target)
    assert rows[1]["name"] == outcome.target and rows[1]["bytes"] == flac.size
    code, out, _ = run(capsys, "recordings", "list", "--uid", "ann")
    assert code == 0 and out.splitlines()[0].split()[5] == "FORMAT" and " flac " in out.splitlines()[2]

    stats = json.loads(run(capsys, "recordings", "stats", "--json")[1])
    assert (stats["recordings"], stats["hours"]) == (2, round(7 / 3600, 3))

    flac_id = rows[1]["id"]
    code, out, err = run(
        capsys, "recordings", "download", "--uid", "ann", "--id", flac_id + ".flac", "-o", str(tmp_path), "-q"
    )
    assert code == 0, err
    assert (tmp_path / f"{flac_id}.flac").read_bytes() == flac.download_as_bytes() and "verified" in out

    code, out, err = run(
        capsys, "recordings", "download", "--uid", "ann", "--id", flac_id, "-o", str(tmp_path / "w"), "--wav", "-q"
    )
    assert code == 0, err
    assert [p.name for p in (tmp_path / "w").iterdir()] == [f"{flac_id}.wav"]
    assert audio_of((tmp_path / "w" / f"{flac_id}.wav").read_bytes(), 16000) == joined(first)


def test_a_wav_compacted_while_listed_is_downloaded_from_its_flac(env, tmp_path):
    two_recordings(env)
    catalog = Catalog(clients.storage_client(), env.recordings_bucket)
    [listed] = [info for info in catalog.recordings("ann") if info.status == "finalized"]
    Compactor(clients.storage_client(), Settings(Format.FLAC)).compact(env.recordings_bucket, listed.name)
    path, got = catalog.download(listed, tmp_path)
    assert got.format == "flac" and path.name == f"{listed.id}.flac"
