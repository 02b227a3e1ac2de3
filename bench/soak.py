"""Fault-injection soak: many simulated Omi devices against ingest and the assembler while
the assembler is SIGKILLed, Cloud Storage fails requests and senders repeat POSTs.

    python -m bench.soak [--devices 50] [--minutes 10] [--seed 1] [--speed 1] ...   (make soak)

Everything runs on free ports of 127.0.0.1, in a temporary directory:

* the Pub/Sub emulator and fake-gcs-server (omi_receiver.devtools.emulators);
* ingest (`receive_chunk`) and the assembler (`assemble_recordings`), each a
  functions-framework process serving main.py;
* between the assembler and fake-gcs-server, omi_receiver.devtools.faultproxy answering 429 or 503
  to a share of the requests, before or after the request took effect;
* a ticker (this process) POSTing one tick CloudEvent at a time, and a killer that
  SIGKILLs the assembler's process group at random moments, preferably mid-pass, then
  restarts it (the killed pass leaves a lease and unacked messages behind), and every
  third time SIGSTOPs it past the ack deadline instead;
* N device threads running omi_receiver.devtools.simulate.stream: current and legacy senders,
  8 and 16 kHz, a few pausing longer than SESSION_GAP_SECONDS, some switching sample
  rate, current senders repeating ~5 % of their POSTs with the same Idempotency-Key and
  cutting ~1.5 % of them part-way (Content-Length announced, part of the body sent, the
  connection closed), then retrying the whole chunk with the same key.

Afterwards the faults stop, ticks go on until every recording is final and the
subscription is drained, and every recording is checked against the devices' ledgers:
per device, the recordings (by name) must hold exactly the acknowledged chunks, in order,
once each, in valid WAVs split exactly where the rules say (pause or idle time over the
gap, sample-rate change, MAX_RECORDING_SECONDS). The run exits 1 on any lost or
duplicated chunk or any other failed check. docs/soak.md explains the numbers.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import wave
from pathlib import Path

import numpy as np
import requests

from omi_receiver.runtime import clients
from omi_receiver.devtools import emulators, resources, simulate
from omi_receiver.runtime import wav as wavfmt
from omi_receiver.runtime.config import Config
from omi_receiver.runtime.contract import duration_us, parse_time
from omi_receiver.devtools.faultproxy import FaultProxy
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX, STATE_PREFIX, WORK_PREFIX
from omi_receiver.devtools.ticker import tick_event

ROOT = Path(__file__).resolve().parent.parent
RESULT_FILE = ROOT / "bench" / "results" / "soak.json"
FUNCTIONS_FRAMEWORK = Path(sys.executable).parent / "functions-framework"
PROJECT = "omi-soak"
US = 1_000_000


# --- settings ---------------------------------------------------------------------------

@dataclasses.dataclass
class Settings:
    devices: int = 50
    minutes: float = 10.0
    seed: int = 1
    speed: float = 1.0
    # Assembler settings (environment of the assembler process).
    session_gap: int = 45
    max_recording: int = 240
    # 0 as in the local stack (omi_receiver.devtools.stack): the emulator keeps a nacked (held)
    # message leased until its ack deadline, so newer chunks overtake it; --settle 2 shows it.
    settle: float = 0.0
    pass_seconds: float = 8.0
    lease_seconds: int = 15
    # The soak's chunk subscription; production has 120 s. Pub/Sub's minimum is 10 s.
    ack_deadline: int = 10
    tick_seconds: float = 4.0
    # Faults.
    error_rate: float = 0.05
    kill_spacing: tuple[float, float] = (40.0, 60.0)  # seconds between kills, uniform
    duplicate_rate: float = 0.05
    # Share of current senders' chunks whose first POST is cut part-way, then retried.
    cut_rate: float = 0.015
    pause_for: float | None = None  # wall seconds; default 1.5 x session_gap
    # Bounds.
    drain_timeout: float | None = None  # default: session gap + 180 s
    workdir: Path | None = None
    # The functions' code (main.py + omi_receiver/); another tree tries a candidate fix.
    code: Path = ROOT
    keep_workdir: bool = False
    quiet: bool = False

    @property
    def wall_seconds(self) -> float:
        return self.minutes * 60.0

    @property
    def pause_seconds(self) -> float:
        return self.pause_for if self.pause_for is not None else round(1.5 * self.session_gap)

    def check(self) -> None:
        problems = []
        if self.devices < 1:
            problems.append("--devices must be at least 1")
        if not 0 < self.speed <= 20:
            problems.append("--speed must be in (0, 20]")
        if self.lease_seconds <= self.pass_seconds:
            problems.append("LEASE_SECONDS must exceed PASS_SECONDS")
        if self.lease_seconds <= self.ack_deadline:
            problems.append("LEASE_SECONDS must exceed the ack deadline (a crashed pass's batch is "
                            "redelivered before its lease runs out)")
        if self.ack_deadline < 10:
            problems.append("--ack-deadline must be at least 10 s (Pub/Sub's minimum)")
        if self.pause_seconds <= self.session_gap + 5:
            problems.append("the pause must exceed the session gap by more than 5 s")
        if max(CURRENT_INTERVALS + LEGACY_INTERVALS) >= self.session_gap - 5:
            problems.append("the session gap must exceed every sender interval by more than 5 s")
        if self.wall_seconds <= self.pause_seconds + 10:
            problems.append("--minutes too short for the pause (need pause + 10 s)")
        if not 0 <= self.error_rate < 1 or not 0 <= self.duplicate_rate <= 1 or not 0 <= self.cut_rate <= 1:
            problems.append("rates must be in [0, 1)")
        if problems:
            raise SystemExit("bench.soak: " + "; ".join(problems))


CURRENT_INTERVALS = (1.0, 2.0, 3.0, 5.0)  # the app's "every X seconds"; all below the gap
LEGACY_INTERVALS = (5.0, 10.0)


# --- the devices ------------------------------------------------------------------------

@dataclasses.dataclass
class Phase:
    rate: int
    seconds: float  # audio seconds
    seed: int
    pause_after: float | None = None  # audio seconds into the phase
    pcm: bytes = b""
    ledger: Path | None = None
    summary: simulate.Summary | None = None
    error: str | None = None


@dataclasses.dataclass
class Device:
    index: int
    uid: str
    mode: str
    interval: float
    phases: list[Phase]
    duplicate_rate: float
    cut_rate: float
    start_delay: float
    pauses: bool
    switches_rate: bool

    def kind(self) -> str:
        rates = "->".join(str(p.rate // 1000) + "k" for p in self.phases)
        extra = (" pause" if self.pauses else "")
        return f"{self.mode} {rates} every {self.interval:g}s{extra}"


def plan_devices(s: Settings) -> list[Device]:
    """Deterministic device mix for (devices, seed). See docs/soak.md for the pattern."""
    rng = random.Random(s.seed)
    devices = []
    audio_total = s.wall_seconds * s.speed
    for i in range(s.devices):
        mode = simulate.MODE_LEGACY if i % 3 == 1 else simulate.MODE_CURRENT
        rate = 16000 if (i // 2) % 2 == 0 else 8000
        interval = rng.choice(CURRENT_INTERVALS if mode == simulate.MODE_CURRENT else LEGACY_INTERVALS)
        pauses = i % 10 in (0, 7)
        switches = i % 10 == 3
        start_delay = rng.uniform(0, min(interval, 3.0))
        seconds = audio_total - (start_delay + (s.pause_seconds if pauses else 0.0)) * s.speed
        if switches:
            seconds -= interval * s.speed  # the second phase restarts its batching
        seconds = max(2 * interval, float(int(seconds)))
        seed_base = s.seed * 1_000_003 + i * 101
        if switches:
            first = float(int(seconds / 2))
            phases = [Phase(rate, first, seed_base), Phase(24000 - rate, seconds - first, seed_base + 1)]
        else:
            pause_after = float(max(1, int(seconds * 0.4))) if pauses else None
            phases = [Phase(rate, seconds, seed_base, pause_after=pause_after)]
        uid = f"soak{s.seed}-d{i:03d}-{'cur' if mode == simulate.MODE_CURRENT else 'leg'}"
        devices.append(Device(
            index=i, uid=uid, mode=mode, interval=interval, phases=phases,
            duplicate_rate=s.duplicate_rate if mode == simulate.MODE_CURRENT else 0.0,
            cut_rate=s.cut_rate if mode == simulate.MODE_CURRENT else 0.0,
            start_delay=start_delay, pauses=pauses, switches_rate=switches,
        ))
    return devices


def make_pcm(seconds: float, rate: int, seed: int) -> bytes:
    """Distinct, deterministic PCM16 noise: no two chunks of a soak are equal."""
    samples = int(round(seconds * rate))
    return np.random.default_rng(seed).integers(-6000, 6000, samples, dtype=np.int16).tobytes()


def run_device(device: Device, s: Settings, url: str, workdir: Path, stop: threading.Event) -> None:
    if stop.wait(device.start_delay):
        return
    for number, phase in enumerate(device.phases):
        if stop.is_set():
            return
        try:
            phase.summary = simulate.stream(
                phase.pcm, phase.rate, url, device.uid,
                mode=device.mode, interval=device.interval, speed=s.speed,
                ledger=phase.ledger, duplicate_rate=device.duplicate_rate, cut_rate=device.cut_rate,
                pause_after=phase.pause_after, pause_for=s.pause_seconds if phase.pause_after else 0.0,
                seed=s.seed * 7919 + device.index * 31 + number, progress=False, stop=stop,
            )
        except Exception as exc:  # noqa: BLE001 - reported, fails the run
            phase.error = repr(exc)
            return


# --- processes --------------------------------------------------------------------------

class FunctionProcess:
    """One functions-framework process serving main.py, restartable (own process group)."""

    def __init__(self, name: str, target: str, port: int, env: dict[str, str], log: Path,
                 cloudevent: bool = False, code: Path = ROOT):
        self.name, self.target, self.port, self.env, self.log = name, target, port, env, log
        self.code = code  # the tree holding main.py and omi_receiver/ that the function runs
        self.cloudevent = cloudevent
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0) -> None:
        source = self.code / "main.py"
        argv = [str(FUNCTIONS_FRAMEWORK), "--source", str(source), "--target", self.target,
                "--host", "127.0.0.1", "--port", str(self.port)]
        if self.cloudevent:
            argv += ["--signature-type", "cloudevent"]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, cwd=self.code, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.starts += 1
        emulators.wait_for_port(self.port, self.proc, f"the {self.name} function", timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn master and worker): no clean-up runs."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        # The worker may outlive the master by a moment, still holding the listening socket.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)  # gunicorn's quick shutdown
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            emulators.stop_process_group(self.proc.pid, grace=2.0)
        # Anything left in the group (a worker whose master died first).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class AssemblerDriver:
    """Ticks the assembler one pass at a time and kills it at random moments.

    Like Cloud Scheduler with one job, a tick is sent only after the previous pass ended.
    A pass that runs longer than `hang_after` is treated as the platform would a function
    past its timeout: the process is killed and restarted, and the pass counts as hung
    (a failed check: the pass must end by itself).
    """

    def __init__(self, fn: FunctionProcess, s: Settings, rng: random.Random, say, workdir: Path):
        self.fn, self.s, self.rng, self.say, self.workdir = fn, s, rng, say, workdir
        self.hang_after = max(30.0, s.pass_seconds + 30.0)
        self.lock = threading.Lock()  # held while the process is killed and restarted
        self.stop = threading.Event()
        self.faults = threading.Event()  # set while kills are allowed
        self.in_flight_since: float | None = None
        self.tick_number = 0
        self.ticks = collections.Counter()
        self.tick_log: list[tuple[float, float, str]] = []  # (start s, duration s, outcome)
        self.kills: list[dict] = []
        self.hung: list[dict] = []
        self.stalls: list[dict] = []
        self.restart_seconds: list[float] = []
        self.last_kill_at = 0.0
        self._threads: list[threading.Thread] = []
        self._topic = f"projects/{PROJECT}/topics/{resources.TICKS_TOPIC}"

    def start(self) -> None:
        for target in (self._tick_loop, self._kill_loop):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> None:
        """Stop ticking and killing; waits for the pass in flight (up to `timeout`)."""
        self.stop.set()
        deadline = time.monotonic() + (self.hang_after + 5 if timeout is None else timeout)
        for thread in self._threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _restart(self, why: str) -> dict:
        """Kill the assembler's process group with SIGKILL and start it again (lock held)."""
        since = self.in_flight_since
        self.fn.kill()
        killed_at = time.monotonic()
        self.last_kill_at = killed_at
        record = {"at_s": round(killed_at - T0[0], 1), "wall_us": _now_us(), "why": why,
                  "mid_pass": since is not None,
                  "into_pass_s": round(killed_at - since, 2) if since is not None else None}
        if self.stop.is_set():
            return record  # shutting down: no new process
        try:
            self.fn.start()
        except emulators.EmulatorError as exc:
            record["restart_failed"] = str(exc)
            self.say(f"assembler restart failed: {exc}")
            self.stop.set()
            return record
        record["restart_s"] = round(time.monotonic() - killed_at, 2)
        self.restart_seconds.append(record["restart_s"])
        return record

    def _tick_loop(self) -> None:
        session = requests.Session()
        url = f"http://127.0.0.1:{self.fn.port}/"
        while not self.stop.is_set():
            started = time.monotonic()
            with self.lock:
                pass  # wait out a restart
            headers, body = tick_event(self._topic)
            self.in_flight_since = time.monotonic()
            self.tick_number += 1
            outcome = "ok"
            try:
                response = session.post(url, data=body, headers=headers, timeout=self.hang_after)
                if response.status_code >= 300:
                    outcome = f"status_{response.status_code}"
            except requests.Timeout:
                outcome = "hung"
            except requests.RequestException:
                outcome = "connection_error"  # killed mid-pass, or restarting
            if outcome == "hung" and not self.stop.is_set():
                with self.lock:
                    self._dump_stacks()
                    record = self._restart("hung pass")
                self.hung.append(record)
                self.say(f"a pass ran {self.hang_after:.0f} s without ending: killed and restarted")
            if outcome != "ok":
                session.close()
                session = requests.Session()
            ended = time.monotonic()
            self.in_flight_since = None
            self.ticks[outcome] += 1
            self.tick_log.append((round(started - T0[0], 1), round(ended - started, 2), outcome))
            self.stop.wait(max(0.2, self.s.tick_seconds - (ended - started)))
        session.close()

    def _kill_loop(self) -> None:
        low, high = self.s.kill_spacing
        number = 0
        while not self.stop.wait(self.rng.uniform(low, high)):
            if not self.faults.is_set():
                continue
            # Prefer a moment inside a pass: wait (briefly) for a tick to be in flight, then
            # a random delay within the usual length of a pass.
            seen = self.tick_number
            deadline = time.monotonic() + self.s.tick_seconds + 2
            while self.tick_number == seen and time.monotonic() < deadline:
                time.sleep(0.02)
            recent = [d for _, d, outcome in self.tick_log[-10:] if outcome == "ok"]
            typical = statistics.median(recent) if recent else 1.0
            if self.stop.wait(self.rng.uniform(0.05, 0.9) * typical) or not self.faults.is_set():
                continue
            number += 1
            if number % 3 == 2:
                record = self._stall()
                self.stalls.append(record)
                self.say(f"stopped the assembler ({'mid-pass' if record['mid_pass'] else 'between passes'}) "
                         f"for {record['stopped_s']} s")
                continue
            with self.lock:
                record = self._restart("fault")
            self.kills.append(record)
            self.say(f"killed the assembler ({'mid-pass' if record['mid_pass'] else 'between passes'}), "
                     f"restarted in {record.get('restart_s', '?')} s")

    def _stall(self) -> dict:
        """SIGSTOP the assembler past the ack deadline, then SIGCONT: its messages are
        redelivered and its leases run out while it sleeps, as in a long GC pause or a
        starved instance; the pass then carries on with stale ack ids and leases."""
        since = self.in_flight_since
        record = {"at_s": round(time.monotonic() - T0[0], 1), "wall_us": _now_us(), "why": "stall",
                  "mid_pass": since is not None,
                  "into_pass_s": round(time.monotonic() - since, 2) if since is not None else None,
                  "stopped_s": self.s.ack_deadline + 3}
        pid = self.fn.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGSTOP)
        try:
            self.stop.wait(self.s.ack_deadline + 3)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)
        return record

    def _dump_stacks(self) -> None:
        """Where a hung pass waits, if py-spy is installed (it is not a dependency)."""
        spy = shutil.which("py-spy")
        if not spy or self.fn.proc is None:
            return
        pids = subprocess.run(["pgrep", "-g", str(self.fn.proc.pid)], capture_output=True, text=True,
                              timeout=10).stdout.split()
        with open(self.workdir / "hung-pass-stacks.txt", "a") as out:
            for pid in pids:
                out.write(subprocess.run([spy, "dump", "--pid", pid], capture_output=True, text=True,
                                         timeout=30).stdout)


T0 = [time.monotonic()]


def _now_us() -> int:
    return int(time.time() * US)


# --- reading results back ---------------------------------------------------------------

class LogReader:
    """Follows the assembler's JSON log (all of its restarts append to one file)."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.events = collections.Counter()
        self.sums = collections.Counter()
        self.passes: list[dict] = []
        self.errors: list[dict] = []

    def poll(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        new_passes = []
        for line in data[:end].split(b"\n"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # gunicorn's own lines, a line torn by SIGKILL
            if not isinstance(entry, dict) or "event" not in entry:
                continue
            event = entry["event"]
            self.events[event] += 1
            if event == "assembler_pass":
                entry["_seen"] = time.monotonic()
                self.passes.append(entry)
                new_passes.append(entry)
            elif event == "duplicates_dropped":
                self.sums["duplicates_dropped"] += entry.get("duplicates", 0)
            elif event == "late_chunks":
                self.sums["late_chunks"] += entry.get("chunks", 0)
            elif event == "flush_deferred":
                self.sums[f"deferred_{entry.get('reason')}"] += entry.get("chunks", 0)
            if entry.get("severity") == "ERROR" and len(self.errors) < 50:
                self.errors.append({k: entry.get(k) for k in ("event", "uid", "error", "detail")})
        return new_passes

    def pass_summary(self) -> dict:
        passes = self.passes
        seconds = sorted(p.get("seconds", 0.0) for p in passes)
        keys = ("pulled", "chunks", "assembled", "duplicates", "late", "held", "poison", "retried",
                "flushes", "finalized")
        return {
            "completed_passes": len(passes),
            **{f"total_{k}": sum(p.get(k, 0) for p in passes) for k in keys},
            "pass_seconds_p50": round(statistics.median(seconds), 2) if seconds else None,
            "pass_seconds_max": round(max(seconds), 2) if seconds else None,
            "max_pulled_in_a_pass": max((p.get("pulled", 0) for p in passes), default=0),
        }


def storage_client(gcs_url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": gcs_url})


def open_states(bucket) -> tuple[int, int]:
    """(users with state, users with an open recording), read from fake-gcs directly."""
    users = opened = 0
    for blob in bucket.list_blobs(prefix=STATE_PREFIX):
        users += 1
        opened += (blob.metadata or {}).get("open") == "1"
    return users, opened


def drain_subscription(subscriber, path: str, limit: int = 100_000, timeout: float = 3.0) -> list:
    """Pull and ack everything waiting (bounded); returns the messages."""
    from google.api_core import exceptions as api_exceptions

    messages = []
    deadline = time.monotonic() + 120
    while len(messages) < limit and time.monotonic() < deadline:
        try:
            response = subscriber.pull(request={"subscription": path, "max_messages": 1000},
                                       timeout=timeout, retry=None)
        except (api_exceptions.DeadlineExceeded, api_exceptions.ServiceUnavailable):
            break
        if not response.received_messages:
            break
        messages += [m.message for m in response.received_messages]
        subscriber.acknowledge(request={"subscription": path,
                                        "ack_ids": [m.ack_id for m in response.received_messages]})
    return messages


# --- verification -----------------------------------------------------------------------

@dataclasses.dataclass
class Expected:
    """One acknowledged chunk, rebuilt from the device's PCM and its ledger entry."""

    phase: int
    seq: int
    data: memoryview
    rate: int
    acked_us: int
    chunk_id: str | None


def expected_chunks(device: Device, mode: str, interval: float, problems: list[str]) -> list[Expected]:
    out = []
    for number, phase in enumerate(device.phases):
        if phase.ledger is None or not phase.ledger.exists():
            continue
        pieces = {}
        for batch in simulate.plan(len(phase.pcm), phase.rate, mode, interval, phase.pause_after):
            for piece in batch.pieces:
                pieces[piece.seq] = piece
        view = memoryview(phase.pcm)
        last_seq = -1
        for entry in simulate.read_ledger(phase.ledger):
            piece = pieces.get(entry.seq)
            if piece is None:
                problems.append(f"{device.uid}: ledger seq {entry.seq} not in the schedule")
                continue
            data = view[piece.start:piece.end]
            if entry.bytes != len(data) or hashlib.sha256(data).hexdigest() != entry.sha256:
                problems.append(f"{device.uid}: ledger entry seq {entry.seq} does not match the PCM sent")
            if entry.seq <= last_seq:
                problems.append(f"{device.uid}: ledger seq {entry.seq} out of order")
            last_seq = entry.seq
            out.append(Expected(number, entry.seq, data, entry.sample_rate, parse_time(entry.acked_at),
                                entry.chunk_id))
    return out


@dataclasses.dataclass
class RecordingFile:
    name: str
    rate: int
    data: bytes
    metadata: dict
    chunks: list[int] = dataclasses.field(default_factory=list)  # indexes into expected


def check_wav(name: str, blob: bytes, problems: list[str]) -> tuple[int, bytes] | None:
    """(rate, PCM) if the object is a valid PCM16 mono WAV with exact header sizes."""
    import soundfile

    try:
        rate, data_bytes = wavfmt.parse_header(blob)
        if data_bytes != len(blob) - wavfmt.HEADER_BYTES:
            problems.append(f"{name}: header says {data_bytes} data bytes, object has "
                            f"{len(blob) - wavfmt.HEADER_BYTES}")
            return None
        with wave.open(io.BytesIO(blob)) as w:
            if (w.getnchannels(), w.getsampwidth(), w.getframerate()) != (1, 2, rate):
                problems.append(f"{name}: wave reads {w.getparams()}")
                return None
            frames = w.readframes(w.getnframes())
        samples, sf_rate = soundfile.read(io.BytesIO(blob), dtype="int16")
        if sf_rate != rate or samples.tobytes() != frames:
            problems.append(f"{name}: soundfile reads something else than wave")
            return None
        if frames != blob[wavfmt.HEADER_BYTES:]:
            problems.append(f"{name}: wave's frames differ from the data chunk")
            return None
        return rate, frames
    except Exception as exc:  # noqa: BLE001 - any parse failure is a broken recording
        problems.append(f"{name}: not a valid WAV ({exc})")
        return None


def match_chunks(recs: list[RecordingFile], expected: list[Expected]) -> dict:
    """Find every acknowledged chunk in the recordings (in name order): counts per chunk."""
    by_hash = {hashlib.sha256(e.data).digest(): i for i, e in enumerate(expected)}
    sizes = sorted({len(e.data) for e in expected})
    occurrences = [0] * len(expected)
    unknown = out_of_order = 0
    k = 0
    for rec in recs:
        data = memoryview(rec.data)
        p = 0
        while p < len(data):
            if k < len(expected) and data[p:p + len(expected[k].data)] == expected[k].data:
                occurrences[k] += 1
                rec.chunks.append(k)
                p += len(expected[k].data)
                k += 1
                continue
            found = None
            for size in sizes:
                index = by_hash.get(hashlib.sha256(data[p:p + size]).digest())
                if index is not None and len(expected[index].data) == size:
                    found = index
                    break
            if found is not None:
                occurrences[found] += 1
                rec.chunks.append(found)
                p += len(expected[found].data)
                if found != k:
                    out_of_order += 1
                if found >= k:
                    k = found + 1
                continue
            # Bytes that are no acknowledged chunk (such as a cut upload's partial body kept in
            # place of its chunk): resync on the first of the next few chunks found after them.
            unknown += 1
            rest = bytes(data[p:])
            starts = [i for i in (rest.find(bytes(e.data)) for e in expected[k:k + 3]) if i > 0]
            p += min(starts, default=len(rest))
    return {
        "occurrences": occurrences,
        "unknown_segments": unknown,
        "out_of_order": out_of_order,
    }


def check_splits(recs: list[RecordingFile], expected: list[Expected], s: Settings,
                 kills: list[dict]) -> dict:
    """Compare where recordings start with the splitting rules of recording.plan_batch.

    The ledger's acked_at stands in for received_at (it is taken just after ingest
    answered, so later by the publish time); a pause or idle time within MARGIN of the
    gap is ambiguous and either outcome is accepted.
    """
    margin = 5 * US
    gap = s.session_gap * US
    max_us = s.max_recording * US
    starts = {rec.chunks[0] for rec in recs if rec.chunks}
    missing, unexpected, ambiguous = [], [], 0
    reasons = collections.Counter()
    rec_rate = rec_bytes = expected_end = last = None
    for j, e in enumerate(expected):
        d = duration_us(len(e.data), e.rate)
        audio_start = e.acked_us - d
        if j == 0:
            required = allowed = True
        else:
            pause = audio_start - expected_end
            idle = e.acked_us - last
            rec_duration = duration_us(rec_bytes, rec_rate)
            exact = e.rate != rec_rate or rec_duration + d > max_us
            required = exact or pause > gap + margin or idle > gap + margin
            allowed = required or pause > gap - margin or idle > gap - margin
            ambiguous += allowed and not required
        is_start = j in starts
        if is_start and j:
            reasons[("rate" if e.rate != rec_rate else "max" if rec_duration + d > max_us else "gap")] += 1
        if required and not is_start:
            missing.append({"chunk": j, "acked_at_us": e.acked_us})
        if is_start and not allowed:
            near = min((abs(k["wall_us"] - e.acked_us) / US for k in kills if "wall_us" in k), default=None)
            unexpected.append({"chunk": j, "idle_s": round((e.acked_us - last) / US, 1),
                               "nearest_kill_s": round(near, 1) if near is not None else None})
        if is_start:
            rec_rate, rec_bytes, expected_end = e.rate, 0, audio_start
        rec_bytes += len(e.data)
        expected_end = max(expected_end, audio_start) + d
        last = e.acked_us
    return {"missing_splits": missing, "unexpected_splits": unexpected, "ambiguous": ambiguous,
            "reasons": dict(reasons)}


def verify(devices: list[Device], bucket, s: Settings, kills: list[dict],
           events: dict[str, int]) -> dict:
    """Every device's recordings against its ledgers; returns per-device and total results."""
    problems: list[str] = []
    totals = collections.Counter()
    per_device = []
    blobs_by_uid = collections.defaultdict(list)
    for blob in bucket.list_blobs(prefix=RECORDINGS_PREFIX):
        uid = blob.name[len(RECORDINGS_PREFIX):].split("/", 1)[0]
        blobs_by_uid[uid].append(blob)
    known = {d.uid for d in devices}
    for uid in set(blobs_by_uid) - known:
        problems.append(f"recordings for an unknown uid {uid}")
    for device in devices:
        dev_problems: list[str] = []
        expected = expected_chunks(device, device.mode, device.interval, dev_problems)
        recs: list[RecordingFile] = []
        late_files = 0
        for blob in sorted(blobs_by_uid.get(device.uid, []), key=lambda b: b.name):
            if "-late-" in blob.name:
                late_files += 1
                dev_problems.append(f"late recording {blob.name} (no chunk of a sequential sender "
                                    "should arrive late)")
            raw = blob.download_as_bytes()
            parsed = check_wav(blob.name, raw, dev_problems)
            meta = blob.metadata or {}
            if parsed is None:
                continue
            rate, data = parsed
            if meta.get("status") != "final":
                dev_problems.append(f"{blob.name}: status {meta.get('status')!r}, not final")
            if meta.get("sample_rate") != str(rate):
                dev_problems.append(f"{blob.name}: metadata sample_rate {meta.get('sample_rate')} != header {rate}")
            if events.get(blob.name, 0) < 1:
                dev_problems.append(f"{blob.name}: no event on the recordings topic")
            recs.append(RecordingFile(blob.name, rate, data, meta))
        matched = match_chunks(recs, expected)
        occ = matched["occurrences"]
        lost = sum(1 for n in occ if n == 0)
        duplicated = sum(n - 1 for n in occ if n > 1) + matched["unknown_segments"]
        identical = (hashlib.sha256(b"".join(r.data for r in recs)).digest()
                     == hashlib.sha256(b"".join(bytes(e.data) for e in expected)).digest())
        for rec in recs:
            if any(expected[k].rate != rec.rate for k in rec.chunks):
                dev_problems.append(f"{rec.name}: holds chunks of another sample rate")
            if rec.metadata.get("chunks") != str(len(rec.chunks)):
                dev_problems.append(f"{rec.name}: metadata chunks {rec.metadata.get('chunks')} != "
                                    f"{len(rec.chunks)} found")
        splits = check_splits(recs, expected, s, kills) if identical and expected else {
            "missing_splits": [], "unexpected_splits": [], "ambiguous": 0, "reasons": {}}
        if not identical:
            dev_problems.append(f"audio differs from the acknowledged chunks (lost {lost}, duplicated "
                                f"{duplicated}, out of order {matched['out_of_order']})")
        for m in splits["missing_splits"]:
            dev_problems.append(f"missing split before chunk {m['chunk']}")
        for u in splits["unexpected_splits"]:
            dev_problems.append(f"unexpected split before chunk {u['chunk']} (idle {u['idle_s']} s, "
                                f"nearest kill {u['nearest_kill_s']} s away)")
        summaries = [p.summary for p in device.phases if p.summary]
        sender = collections.Counter()
        for summary in summaries:
            for key in ("chunks", "sent", "acked", "retried", "failed", "dropped", "duplicates", "cuts"):
                sender[key] += getattr(summary, key)
            sender["stopped"] += summary.stopped
        for p in device.phases:
            if p.error:
                dev_problems.append(f"simulator error: {p.error}")
        if sender["failed"] or sender["dropped"]:
            dev_problems.append(f"sender failed {sender['failed']} / dropped {sender['dropped']} chunks")
        if sender["acked"] != len(expected):
            dev_problems.append(f"ledger has {len(expected)} entries, sender acked {sender['acked']}")
        totals.update(sender)
        totals["ledger_acked"] += len(expected)
        totals["assembled"] += sum(1 for n in occ if n > 0)
        totals["lost"] += lost
        totals["duplicated"] += duplicated
        totals["out_of_order"] += matched["out_of_order"]
        totals["recordings"] += len(recs)
        totals["late_files"] += late_files
        totals["missing_splits"] += len(splits["missing_splits"])
        totals["unexpected_splits"] += len(splits["unexpected_splits"])
        totals["ambiguous_boundaries"] += splits["ambiguous"]
        totals["audio_seconds"] += sum(len(e.data) / (2 * e.rate) for e in expected)
        per_device.append({
            "uid": device.uid, "kind": device.kind(), "pauses": device.pauses,
            "switches_rate": device.switches_rate,
            "acked": len(expected), "assembled": sum(1 for n in occ if n > 0), "lost": lost,
            "duplicated": duplicated, "duplicate_posts": sender["duplicates"], "cut_uploads": sender["cuts"],
            "retried": sender["retried"],
            "recordings": len(recs), "identical": identical,
            "splits": splits["reasons"],
            "problems": dev_problems[:20],
        })
        problems += [f"{device.uid}: {p}" for p in dev_problems]
    return {"totals": dict(totals), "devices": per_device, "problems": problems}


def split_summary(devices: list[dict]) -> dict:
    """Recordings and splits per kind of device. Splits are only checked on devices whose
    audio is byte-identical to their acknowledged chunks (the others already failed)."""
    checked = [d for d in devices if d["identical"]]
    pausing = [d for d in checked if d["pauses"] and not d["switches_rate"]]
    plain = [d for d in checked if not d["pauses"] and not d["switches_rate"]]

    def histogram(values):
        return sorted(collections.Counter(values).items())

    return {
        "split_checked_devices": len(checked),
        "per_plain_device": histogram(d["recordings"] for d in plain),
        "per_pausing_device": histogram(d["recordings"] for d in pausing),
        "splits_by_reason": dict(sum((collections.Counter(d["splits"]) for d in checked), collections.Counter())),
        "gap_splits_per_plain_device": histogram(d["splits"].get("gap", 0) for d in plain),
        "gap_splits_per_pausing_device": histogram(d["splits"].get("gap", 0) for d in pausing),
    }


# --- the run ----------------------------------------------------------------------------

class Soak:
    def __init__(self, s: Settings, pubsub_host: str | None = None, gcs_url: str | None = None):
        self.s = s
        self.external = (pubsub_host, gcs_url)
        self.rng = random.Random(s.seed)
        self.cleanup: list = []
        self.load: list[float] = []
        self.lines: list[str] = []

    def say(self, text: str) -> None:
        line = f"[soak {time.monotonic() - T0[0]:7.1f}s] {text}"
        self.lines.append(line)
        if not self.s.quiet:
            print(line, flush=True)

    def run(self) -> dict:
        s = self.s
        s.check()
        T0[0] = time.monotonic()
        own_dir = s.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="omi-soak-")) if own_dir else s.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        saved_env = {k: os.environ.get(k) for k in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST",
                                                   "GOOGLE_CLOUD_PROJECT")}
        ok = False
        try:
            result = self._run(workdir)
            ok = result["passed"]
            return result
        finally:
            for action in reversed(self.cleanup):
                with contextlib.suppress(Exception):
                    action()
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            clients.set_publisher(None)
            clients.set_subscriber(None)
            clients.set_storage(None)
            if own_dir and ok and not s.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                self.say(f"logs and ledgers kept in {workdir}")

    def _run(self, workdir: Path) -> dict:
        s = self.s
        started_at = dt.datetime.now(dt.timezone.utc)
        self.code_provenance = provenance(s.code)
        # --- emulators, resources -------------------------------------------------------
        pubsub_host, gcs_url = self.external
        if pubsub_host is None:
            pubsub = emulators.start_pubsub(emulators.free_port(), PROJECT, workdir / "pubsub.log")
            self.cleanup.append(pubsub.stop)
            pubsub_host = pubsub.host
        if gcs_url is None:
            gcs = emulators.start_gcs(emulators.free_port(), workdir / "gcs.log")
            self.cleanup.append(gcs.stop)
            gcs_url = f"http://{gcs.host}"
        os.environ.update(PUBSUB_EMULATOR_HOST=pubsub_host, STORAGE_EMULATOR_HOST=gcs_url,
                          GOOGLE_CLOUD_PROJECT=PROJECT)
        clients.set_publisher(None)
        clients.set_subscriber(None)
        clients.set_storage(None)
        tag = uuid.uuid4().hex[:8]
        config = Config(
            google_cloud_project=PROJECT,
            chunks_topic=f"soak-chunks-{tag}",
            chunks_subscription=f"soak-chunks-sub-{tag}",
            dead_letter_topic=f"soak-dead-letter-{tag}",
            recordings_topic=f"soak-recordings-{tag}",
            recordings_bucket=f"soak-recordings-{tag}",
            ingest_tokens=secrets.token_urlsafe(18),
            session_gap_seconds=s.session_gap,
            max_recording_seconds=s.max_recording,
            settle_seconds=s.settle,
            pass_seconds=s.pass_seconds,
            lease_seconds=s.lease_seconds,
            ack_deadline_seconds=s.ack_deadline,
        )
        base_env = {k: v for k, v in os.environ.items()
                    if k not in ("STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")}
        settings_env = {
            "GOOGLE_CLOUD_PROJECT": PROJECT, "PUBSUB_EMULATOR_HOST": pubsub_host,
            "CHUNKS_TOPIC": config.chunks_topic, "CHUNKS_SUBSCRIPTION": config.chunks_subscription,
            "DEAD_LETTER_TOPIC": config.dead_letter_topic, "RECORDINGS_TOPIC": config.recordings_topic,
            "RECORDINGS_BUCKET": config.recordings_bucket, "INGEST_TOKENS": config.ingest_tokens,
            "SESSION_GAP_SECONDS": str(s.session_gap), "MAX_RECORDING_SECONDS": str(s.max_recording),
            "SETTLE_SECONDS": str(s.settle), "PASS_SECONDS": str(s.pass_seconds),
            "LEASE_SECONDS": str(s.lease_seconds), "ACK_DEADLINE_SECONDS": str(s.ack_deadline),
            "PYTHONUNBUFFERED": "1",
        }
        # Provisioned by the code under test (its resources.py decides ordering, dead-letter
        # policy...), with the soak's own, shorter ack deadline.
        subprocess.run([sys.executable, "-c", PROVISION, str(s.ack_deadline)], cwd=s.code, check=True,
                       timeout=120, env={**base_env, **settings_env, "STORAGE_EMULATOR_HOST": gcs_url})
        self.say(f"emulators up (pubsub {pubsub_host}, gcs {gcs_url}); resources *-{tag}")

        proxy = FaultProxy(gcs_url, port=0, error_rate=0.0, mode="mixed", seed=s.seed).start()
        self.cleanup.append(proxy.stop)

        ingest = FunctionProcess("ingest", "receive_chunk", emulators.free_port(),
                                 {**base_env, **settings_env}, workdir / "ingest.log", code=s.code)
        assembler = FunctionProcess("assembler", "assemble_recordings", emulators.free_port(),
                                    {**base_env, **settings_env, "STORAGE_EMULATOR_HOST": proxy.url},
                                    workdir / "assembler.log", cloudevent=True, code=s.code)
        self.cleanup.append(ingest.stop)
        self.cleanup.append(assembler.stop)
        ingest.start()
        assembler.start()
        url = f"http://127.0.0.1:{ingest.port}/soak/{config.tokens[0]}"
        self.say(f"ingest :{ingest.port}, assembler :{assembler.port}, storage proxy {proxy.url}")

        # --- devices --------------------------------------------------------------------
        devices = plan_devices(s)
        for device in devices:
            for number, phase in enumerate(device.phases):
                phase.pcm = make_pcm(phase.seconds, phase.rate, phase.seed)
                phase.ledger = workdir / f"{device.uid}.{number}.ledger.jsonl"
        stop_devices = threading.Event()
        self.cleanup.append(stop_devices.set)
        threads = [threading.Thread(target=run_device, args=(d, s, url, workdir, stop_devices),
                                    daemon=True, name=d.uid) for d in devices]

        log = LogReader(workdir / "assembler.log")
        driver = AssemblerDriver(assembler, s, self.rng, self.say, workdir)

        def stop_driver() -> None:
            driver.join(timeout=0)
            with driver.lock:  # not while a restart is under way
                assembler.stop()

        self.cleanup.append(stop_driver)
        sampler_stop = threading.Event()
        self.cleanup.append(sampler_stop.set)
        sampler = threading.Thread(target=self._sample_load, args=(sampler_stop,), daemon=True)
        sampler.start()

        proxy.error_rate = s.error_rate
        driver.faults.set()
        driver.start()
        streaming_started = time.monotonic()
        for thread in threads:
            thread.start()
        self.say(f"{len(devices)} devices streaming for {s.wall_seconds:.0f} s at {s.speed:g}x; "
                 f"faults: kills every {s.kill_spacing[0]:.0f}-{s.kill_spacing[1]:.0f} s, storage errors "
                 f"{s.error_rate:.0%}, duplicate POSTs {s.duplicate_rate:.0%}, cut uploads {s.cut_rate:.1%}, "
                 f"pauses {s.pause_seconds:.0f} s (gap {s.session_gap} s)")
        deadline = streaming_started + s.wall_seconds + 120
        next_report = time.monotonic() + 30
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            time.sleep(1.0)
            log.poll()
            if time.monotonic() >= next_report:
                next_report += 30
                acked = sum(p.summary.acked for d in devices for p in d.phases if p.summary)
                alive = sum(t.is_alive() for t in threads)
                self.say(f"{alive} devices streaming; passes {len(log.passes)}, kills {len(driver.kills)}, "
                         f"storage errors {sum(proxy.injected.values())}, events {dict(log.events)}")
        stop_devices.set()
        for thread in threads:
            thread.join(timeout=60)
        streaming_seconds = time.monotonic() - streaming_started
        stuck = [t.name for t in threads if t.is_alive()]
        self.say(f"devices done after {streaming_seconds:.0f} s" + (f"; still running: {stuck}" if stuck else ""))

        # --- let the assembler finish, without faults --------------------------------------
        driver.faults.clear()
        proxy.error_rate = 0.0
        storage_requests = dict(proxy.counts)
        injected = dict(proxy.injected)
        drain_started = time.monotonic()
        gcs_direct = storage_client(gcs_url).bucket(config.recordings_bucket)
        drain_timeout = s.drain_timeout if s.drain_timeout is not None else s.session_gap + 180
        drained = False
        last_busy = time.monotonic()
        while time.monotonic() - drain_started < drain_timeout:
            time.sleep(1.0)
            for p in log.poll():
                if p.get("pulled", 0) or p.get("retried", 0):
                    last_busy = p["_seen"]
            quiet_for = time.monotonic() - max(last_busy, driver.last_kill_at)
            if quiet_for < s.ack_deadline + 2 or not log.passes:
                continue
            users, opened = open_states(gcs_direct)
            if opened == 0 and log.passes[-1].get("pulled", 0) == 0:
                drained = True
                break
        driver.join()
        log.poll()
        drain_seconds = time.monotonic() - drain_started
        self.say(f"assembler {'drained' if drained else 'NOT drained'} after {drain_seconds:.0f} s")

        # --- check ------------------------------------------------------------------------
        subscriber = clients.subscriber()
        dead = drain_subscription(subscriber, config.subscription_path(config.dead_letter_hold_subscription))
        event_messages = drain_subscription(subscriber, config.subscription_path(
            resources.recordings_subscription(config)))
        events = collections.Counter(json.loads(m.data).get("name") for m in event_messages)
        leftover = drain_subscription(subscriber, config.subscription_path(config.chunks_subscription),
                                      timeout=2.0)
        users, opened = open_states(gcs_direct)
        work_left_names = [blob.name for blob in gcs_direct.list_blobs(prefix=WORK_PREFIX)]
        work_left = len(work_left_names)
        verification = verify(devices, gcs_direct, s, driver.kills + driver.hung + driver.stalls, events)
        totals = verification["totals"]

        kinds = collections.Counter()
        statuses = collections.Counter()
        timing = collections.Counter()
        for key, count in injected.items():
            kind, when, status = key.split(":")
            kinds[kind] += count
            statuses[status] += count
            timing[when] += count
        faults = {
            "assembler_kills": len(driver.kills),
            "kills_mid_pass": sum(1 for k in driver.kills if k.get("mid_pass")),
            "kills": driver.kills,
            "assembler_stalls": len(driver.stalls),
            "stalls": driver.stalls,
            "storage_errors": sum(injected.values()),
            "storage_errors_by_status": dict(statuses),
            "storage_errors_by_request": dict(kinds),
            "storage_errors_before_after": dict(timing),
            "storage_requests": sum(storage_requests.values()),
            "duplicate_posts": totals.get("duplicates", 0),
            "cut_uploads": totals.get("cuts", 0),
            "pausing_devices": sum(d.pauses for d in devices),
            "rate_switching_devices": sum(d.switches_rate for d in devices),
            "sender_retries": totals.get("retried", 0),
            "duplicates_dropped_by_assembler": log.sums["duplicates_dropped"],
            # Chunks dropped as duplicates beyond the duplicate POSTs: deliveries of chunks
            # already committed (a kill between commit and ack, an ack deadline that ran out
            # during a stall). Redeliveries of uncommitted chunks are not duplicates.
            "redelivered_after_commit": max(0, log.sums["duplicates_dropped"] - totals.get("duplicates", 0)),
            "flushes_deferred_chunks": {k: v for k, v in log.sums.items() if k.startswith("deferred_")},
        }
        checks = {
            "lost": totals.get("lost", 0),
            "duplicated": totals.get("duplicated", 0),
            "out_of_order": totals.get("out_of_order", 0),
            "late_files": totals.get("late_files", 0),
            "missing_splits": totals.get("missing_splits", 0),
            "unexpected_splits": totals.get("unexpected_splits", 0),
            "dead_lettered": len(dead),
            "undelivered_chunks_left": len(leftover),
            "open_recordings_left": opened,
            "work_objects_left": work_left,
            "drained": drained,
            "hung_passes": len(driver.hung),
            "devices_stuck": len(stuck),
            "poison_messages": log.events["poison_message"],
        }
        problems = list(verification["problems"])
        for d in verification["devices"]:
            want = 1 if d["pauses"] else 0
            if d["identical"] and d["splits"].get("gap", 0) != want:
                problems.append(f"{d['uid']}: {d['splits'].get('gap', 0)} splits at pauses, expected {want}")
        for name in ("dead_lettered", "undelivered_chunks_left", "open_recordings_left", "devices_stuck",
                     "poison_messages", "hung_passes"):
            if checks[name]:
                problems.append(f"{name}: {checks[name]}")
        if not drained:
            problems.append("the assembler did not drain within the drain timeout")
        if checks["work_objects_left"]:
            problems.append(f"{work_left} temporary objects left under {WORK_PREFIX}: {', '.join(work_left_names[:5])}")
        if faults["assembler_kills"] == 0 and s.wall_seconds > s.kill_spacing[1] + 5:
            problems.append("no kill happened")
        passed = not problems and checks["lost"] == 0 and checks["duplicated"] == 0
        result = {
            "passed": passed,
            "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "code": self.code_provenance,
            "settings": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(s).items()
                            if k not in ("workdir", "keep_workdir", "quiet", "code")},
                         "pause_seconds": s.pause_seconds},
            "machine": {"nproc": os.cpu_count(), "loadavg_1m_max": max(self.load, default=None),
                        "loadavg_1m_mean": round(statistics.mean(self.load), 2) if self.load else None},
            "timing": {"streaming_s": round(streaming_seconds, 1), "drain_s": round(drain_seconds, 1),
                       "total_s": round(time.monotonic() - T0[0], 1),
                       "assembler_restart_s_max": round(max(driver.restart_seconds), 2)
                       if driver.restart_seconds else None},
            "chunks": {
                "scheduled": totals.get("chunks", 0),
                "posts": totals.get("sent", 0),
                "acknowledged": totals.get("ledger_acked", 0),
                "assembled": totals.get("assembled", 0),
                "lost": checks["lost"],
                "duplicated": checks["duplicated"],
                "sender_failed": totals.get("failed", 0),
                "sender_dropped": totals.get("dropped", 0),
                "audio_hours": round(totals.get("audio_seconds", 0) / 3600, 3),
            },
            "recordings": {
                "total": totals.get("recordings", 0),
                **split_summary(verification["devices"]),
                "ambiguous_boundaries": totals.get("ambiguous_boundaries", 0),
                "events_published": len(event_messages), "distinct_event_names": len(events),
            },
            "faults": faults,
            "checks": checks,
            "assembler": {**log.pass_summary(), "ticks": dict(driver.ticks), "hung": driver.hung,
                          "tick_seconds_max": max((d for _, d, _ in driver.tick_log), default=None),
                          "slowest_ticks": sorted(driver.tick_log, key=lambda x: -x[1])[:5],
                          "log_events": dict(log.events), "errors_sample": log.errors[:10]},
            "problems": problems[:100],
            "devices": verification["devices"],
        }
        self.print_table(result)
        return result

    def _sample_load(self, stop: threading.Event) -> None:
        while not stop.wait(5.0):
            self.load.append(os.getloadavg()[0])

    def print_table(self, r: dict) -> None:
        if self.s.quiet:
            return
        c, f, k, rec = r["chunks"], r["faults"], r["checks"], r["recordings"]
        rows = [
            ("devices", f"{self.s.devices} ({f['pausing_devices']} pausing, {f['rate_switching_devices']} "
                        f"switching rate) for {self.s.minutes:g} min at {self.s.speed:g}x"),
            ("chunks scheduled / POSTs", f"{c['scheduled']} / {c['posts']}"),
            ("acknowledged", c["acknowledged"]),
            ("assembled", c["assembled"]),
            ("LOST", c["lost"]),
            ("DUPLICATED", c["duplicated"]),
            ("sender failed / dropped", f"{c['sender_failed']} / {c['sender_dropped']}"),
            ("recordings", f"{rec['total']}; on the {rec['split_checked_devices']} byte-identical devices: per "
                           f"plain device {rec['per_plain_device']}, per pausing device {rec['per_pausing_device']}"),
            ("splits by reason", f"{rec['splits_by_reason']}; at a pause: plain devices "
                                 f"{rec['gap_splits_per_plain_device']}, pausing {rec['gap_splits_per_pausing_device']}"),
            ("assembler kills / stalls", f"{f['assembler_kills']} ({f['kills_mid_pass']} mid-pass) / "
                                         f"{f['assembler_stalls']} (SIGSTOP past the ack deadline)"),
            ("storage errors", f"{f['storage_errors']} of {f['storage_requests']} requests "
                               f"{f['storage_errors_by_status']} {f['storage_errors_before_after']}"),
            ("storage errors by request", f["storage_errors_by_request"]),
            ("duplicate POSTs", f["duplicate_posts"]),
            ("cut uploads (then retried)", f["cut_uploads"]),
            ("duplicates dropped", f"{f['duplicates_dropped_by_assembler']} (of which redelivered after "
                                   f"commit {f['redelivered_after_commit']})"),
            ("deferred (lease busy etc.)", f["flushes_deferred_chunks"]),
            ("dead-lettered", k["dead_lettered"]),
            ("late files / splits missing / unexpected",
             f"{k['late_files']} / {k['missing_splits']} / {k['unexpected_splits']}"),
            ("open recordings / work objects left", f"{k['open_recordings_left']} / {k['work_objects_left']}"),
            ("hung passes (killed by watchdog)", k["hung_passes"]),
            ("passes", f"{r['assembler']['completed_passes']} completed, p50 "
                       f"{r['assembler']['pass_seconds_p50']} s, max {r['assembler']['pass_seconds_max']} s"),
            ("time", f"streaming {r['timing']['streaming_s']} s, drain {r['timing']['drain_s']} s, total "
                     f"{r['timing']['total_s']} s; load avg max {r['machine']['loadavg_1m_max']}"),
            ("RESULT", "PASS" if r["passed"] else "FAIL"),
        ]
        width = max(len(name) for name, _ in rows)
        print()
        for name, value in rows:
            print(f"  {name:<{width}}  {value}")
        for problem in r["problems"][:20]:
            print(f"  ! {problem}")
        print(flush=True)


PROVISION = """
import sys
from omi_receiver.devtools import resources
from omi_receiver.runtime.config import Config
config = Config.from_env()
assert config.ack_deadline_seconds == int(sys.argv[1]), "ACK_DEADLINE_SECONDS must reach the code"
resources.provision(config)
"""


def _sources_digest(code: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted([code / "main.py", *(code / "omi_receiver").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def provenance(code: Path) -> dict:
    """Which code the functions ran: commit, uncommitted changes, a hash of the sources."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=code, capture_output=True, text=True,
                                  timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    label = code / ".soak-commit"  # an exported tree (git archive) names its commit here
    if label.exists():
        return {"commit": label.read_text().strip(), "uncommitted": [], "tree": f"export at {code}",
                "sources_sha256": _sources_digest(code)}
    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted": git("status", "--porcelain", "--", "main.py", "omi_receiver").splitlines(),
        "sources_sha256": _sources_digest(code),
        "tree": "this repository" if code == ROOT else str(code),
    }


def run(s: Settings, pubsub_host: str | None = None, gcs_url: str | None = None) -> dict:
    return Soak(s, pubsub_host, gcs_url).run()


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=d.devices)
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock streaming time")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--speed", type=float, default=d.speed, help="audio released N times faster than real time")
    p.add_argument("--session-gap", type=int, default=d.session_gap, help="SESSION_GAP_SECONDS")
    p.add_argument("--max-recording", type=int, default=d.max_recording, help="MAX_RECORDING_SECONDS")
    p.add_argument("--settle", type=float, default=d.settle, help="SETTLE_SECONDS")
    p.add_argument("--pass-seconds", type=float, default=d.pass_seconds, help="PASS_SECONDS")
    p.add_argument("--lease-seconds", type=int, default=d.lease_seconds, help="LEASE_SECONDS")
    p.add_argument("--ack-deadline", type=int, default=d.ack_deadline, help="the chunk subscription's")
    p.add_argument("--tick", type=float, default=d.tick_seconds, help="seconds between tick starts")
    p.add_argument("--error-rate", type=float, default=d.error_rate, help="share of storage requests failed")
    p.add_argument("--kill-every", type=float, nargs=2, default=d.kill_spacing, metavar=("MIN", "MAX"),
                   help="seconds between assembler kills, uniform in [MIN, MAX]")
    p.add_argument("--duplicate-rate", type=float, default=d.duplicate_rate)
    p.add_argument("--cut-rate", type=float, default=d.cut_rate,
                   help="share of current senders' POSTs first sent cut part-way, then retried")
    p.add_argument("--pause-for", type=float, default=None, help="wall seconds (default 1.5 x gap)")
    p.add_argument("--out", type=Path, default=RESULT_FILE, help="result JSON (default: %(default)s)")
    p.add_argument("--no-out", action="store_true", help="do not write the result file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, ledgers)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--code", type=Path, default=ROOT,
                   help="tree with main.py and omi_receiver/ for the two functions (default: this one)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = Settings(devices=args.devices, minutes=args.minutes, seed=args.seed, speed=args.speed,
                 session_gap=args.session_gap, max_recording=args.max_recording, settle=args.settle,
                 pass_seconds=args.pass_seconds, lease_seconds=args.lease_seconds,
                 ack_deadline=args.ack_deadline, tick_seconds=args.tick, error_rate=args.error_rate,
                 kill_spacing=tuple(args.kill_every), duplicate_rate=args.duplicate_rate, cut_rate=args.cut_rate,
                 pause_for=args.pause_for, keep_workdir=args.keep, quiet=args.quiet, code=args.code.resolve())
    stopping = []

    def on_signal(signum, frame):
        if stopping:  # already cleaning up: a second signal must not cut the clean-up short
            return
        stopping.append(signum)
        sys.exit(128 + signum)  # runs the clean-up in `finally`

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    result = run(s)
    if not args.no_out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
        print(f"result written to {args.out}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
