"""The soak's settings (`Settings`, one per run, from the command line) and the fixed facts
they are checked against: the sender intervals the devices draw from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: bench/soak/settings.py
RESULT_FILE = ROOT / "bench" / "results" / "soak.json"
PROJECT = "omi-soak"
US = 1_000_000

CURRENT_INTERVALS = (1.0, 2.0, 3.0, 5.0)  # the app's "every X seconds"; all below the gap
LEGACY_INTERVALS = (5.0, 10.0)


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

    @property
    def drain_seconds(self) -> float:
        """How long the assembler may take to finish once the devices stopped."""
        return self.drain_timeout if self.drain_timeout is not None else self.session_gap + 180

    def check(self) -> None:
        problems = [message for bad, message in self._rules() if bad]
        if problems:
            raise SystemExit("bench.soak: " + "; ".join(problems))

    def _rules(self) -> list[tuple[bool, str]]:
        rates_ok = 0 <= self.error_rate < 1 and 0 <= self.duplicate_rate <= 1 and 0 <= self.cut_rate <= 1
        return [
            (self.devices < 1, "--devices must be at least 1"),
            (not 0 < self.speed <= 20, "--speed must be in (0, 20]"),
            (self.lease_seconds <= self.pass_seconds, "LEASE_SECONDS must exceed PASS_SECONDS"),
            (
                self.lease_seconds <= self.ack_deadline,
                "LEASE_SECONDS must exceed the ack deadline (a crashed pass's batch is "
                "redelivered before its lease runs out)",
            ),
            (self.ack_deadline < 10, "--ack-deadline must be at least 10 s (Pub/Sub's minimum)"),
            (self.pause_seconds <= self.session_gap + 5, "the pause must exceed the session gap by more than 5 s"),
            (
                max(CURRENT_INTERVALS + LEGACY_INTERVALS) >= self.session_gap - 5,
                "the session gap must exceed every sender interval by more than 5 s",
            ),
            (self.wall_seconds <= self.pause_seconds + 10, "--minutes too short for the pause (need pause + 10 s)"),
            (not rates_ok, "rates must be in [0, 1)"),
        ]

    def reported(self) -> dict:
        """The settings as soak.json records them."""
        hidden = ("workdir", "keep_workdir", "quiet", "code")
        values = {
            k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items() if k not in hidden
        }
        return {**values, "pause_seconds": self.pause_seconds}
