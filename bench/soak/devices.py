"""The device plan: which simulated Omi devices a soak runs (sender, rate, interval, pauses,
a rate switch), their audio and ledgers, and the threads that stream it (`Fleet`)."""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path

import numpy as np

from bench.soak.settings import CURRENT_INTERVALS, LEGACY_INTERVALS, Settings
from omi_receiver.devtools import simulate
from omi_receiver.devtools.simulate import Mode


@dataclasses.dataclass
class Phase:
    """One stream of a device: a stretch of audio at one sample rate."""

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
    mode: Mode
    interval: float
    phases: list[Phase]
    duplicate_rate: float
    cut_rate: float
    start_delay: float
    pauses: bool
    switches_rate: bool

    def kind(self) -> str:
        rates = "->".join(str(p.rate // 1000) + "k" for p in self.phases)
        extra = " pause" if self.pauses else ""
        return f"{self.mode} {rates} every {self.interval:g}s{extra}"

    def options(self, number: int, s: Settings) -> simulate.Options:
        """How the device sends its `number`-th phase."""
        phase = self.phases[number]
        return simulate.Options(
            mode=self.mode,
            interval=self.interval,
            speed=s.speed,
            duplicate_rate=self.duplicate_rate,
            cut_rate=self.cut_rate,
            pause_after=phase.pause_after,
            pause_for=s.pause_seconds if phase.pause_after else 0.0,
            seed=s.seed * 7919 + self.index * 31 + number,
        )


def plan_devices(s: Settings) -> list[Device]:
    """Deterministic device mix for (devices, seed). See docs/soak.md for the pattern."""
    rng = random.Random(s.seed)
    return [_plan_device(i, s, rng) for i in range(s.devices)]


def _plan_device(i: int, s: Settings, rng: random.Random) -> Device:
    mode = Mode.LEGACY if i % 3 == 1 else Mode.CURRENT
    rate = 16000 if (i // 2) % 2 == 0 else 8000
    interval = rng.choice(CURRENT_INTERVALS if mode is Mode.CURRENT else LEGACY_INTERVALS)
    pauses = i % 10 in (0, 7)
    switches = i % 10 == 3
    start_delay = rng.uniform(0, min(interval, 3.0))
    seconds = s.wall_seconds * s.speed - (start_delay + (s.pause_seconds if pauses else 0.0)) * s.speed
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
    current = mode is Mode.CURRENT
    return Device(
        index=i,
        uid=f"soak{s.seed}-d{i:03d}-{'cur' if current else 'leg'}",
        mode=mode,
        interval=interval,
        phases=phases,
        duplicate_rate=s.duplicate_rate if current else 0.0,
        cut_rate=s.cut_rate if current else 0.0,
        start_delay=start_delay,
        pauses=pauses,
        switches_rate=switches,
    )


def make_pcm(seconds: float, rate: int, seed: int) -> bytes:
    """Distinct, deterministic PCM16 noise: no two chunks of a soak are equal."""
    samples = int(round(seconds * rate))
    return np.random.default_rng(seed).integers(-6000, 6000, samples, dtype=np.int16).tobytes()


def prepare(devices: list[Device], workdir: Path) -> None:
    """Give every phase its audio and its ledger file."""
    for device in devices:
        for number, phase in enumerate(device.phases):
            phase.pcm = make_pcm(phase.seconds, phase.rate, phase.seed)
            phase.ledger = workdir / f"{device.uid}.{number}.ledger.jsonl"


def run_device(device: Device, s: Settings, url: str, stop: threading.Event) -> None:
    """Stream the device's phases one after another (a thread's body)."""
    if stop.wait(device.start_delay):
        return
    for number, phase in enumerate(device.phases):
        if stop.is_set():
            return
        try:
            phase.summary = simulate.stream(
                phase.pcm, phase.rate, url, device.uid, device.options(number, s), ledger=phase.ledger, stop=stop
            )
        except Exception as exc:  # noqa: BLE001 - reported, fails the run
            phase.error = repr(exc)
            return


class Fleet:
    """One thread per device, started together; `stop` ends them all."""

    def __init__(self, devices: list[Device], s: Settings, url: str):
        self.devices = devices
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=run_device, args=(d, s, url, self.stop), daemon=True, name=d.uid) for d in devices
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def alive(self) -> int:
        return sum(t.is_alive() for t in self.threads)

    def finish(self, timeout: float = 60.0) -> list[str]:
        """Stop every device; the names of those still running after `timeout` s each."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=timeout)
        return [t.name for t in self.threads if t.is_alive()]
