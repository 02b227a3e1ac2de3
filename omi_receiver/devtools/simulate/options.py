"""How a simulated device sends: which sender (`Mode`), its pacing, its answer to failures
(`Retries`) and the faults it injects, in one frozen `Options`; checked when built.

The defaults are the real sender's (docs/omi-sender.md): 15 s timeout (2 s to connect),
retries after 1, 5 and 30 s, a breaker after 5 failed chunks in a row that skips sends for
30 s, the webhook disabled after 100.
"""

from __future__ import annotations

import dataclasses
import enum
import math

DEFAULT_INTERVAL = 1.0
DEFAULT_TIMEOUT = (2.0, 15.0)  # (connect, read) seconds, as the real sender
DEFAULT_RETRY_DELAYS = (1.0, 5.0, 30.0)  # 4 attempts in all
DEFAULT_BREAKER_THRESHOLD = 5
DEFAULT_BREAKER_COOLDOWN = 30.0
DEFAULT_DISABLE_AFTER = 100
# The sender accepts 1000-192000 Hz; the receiver's contract is narrower (8000-48000),
# so a simulator may send rates the receiver must reject.
SENDER_MIN_SAMPLE_RATE = 1000
SENDER_MAX_SAMPLE_RATE = 192000


class UsageError(ValueError):
    """Bad input to the simulator (file, URL, uid, option); the CLI exits with 2."""


class Mode(enum.StrEnum):
    """Which generation of the Omi backend's sender is emulated."""

    CURRENT = "current"  # 1-s POSTs in X-second batches, Idempotency-Key, retries, breaker
    LEGACY = "legacy"  # one POST per X seconds, concatenated URL, no key, no retries


@dataclasses.dataclass(frozen=True)
class Retries:
    """The current sender's answer to failures: retry delays, circuit breaker, giving up."""

    delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS  # seconds before each retry
    breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD  # failed chunks in a row that open it
    breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN  # wall-clock seconds it stays open
    disable_after: int = DEFAULT_DISABLE_AFTER  # failed chunks in a row: the webhook is off


@dataclasses.dataclass(frozen=True)
class Options:
    """One stream's sending behaviour. UsageError from the constructor for a bad value."""

    mode: Mode = Mode.CURRENT
    interval: float = DEFAULT_INTERVAL  # seconds of audio per batch: the app's "every X seconds"
    fast: bool = False  # send as fast as answers come instead of paced
    speed: float = 1.0  # pacing: batches released N times faster than real time
    timeout: tuple[float, float] = DEFAULT_TIMEOUT  # (connect, read) per POST
    retries: Retries = Retries()
    # A device disconnect after `pause_after` s of audio, lasting `pause_for` wall seconds.
    pause_after: float | None = None
    pause_for: float = 0.0
    # Which part of the audio is sent.
    start_offset: float = 0.0
    max_seconds: float | None = None
    # Faults (current mode): share of acked chunks POSTed again with the same key, share of
    # chunks whose first attempt is cut part-way; `seed` makes both reproducible.
    duplicate_rate: float = 0.0
    cut_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", Mode(self.mode))
        except ValueError:
            raise UsageError(f"mode must be one of {', '.join(Mode)}; got {self.mode!r}") from None
        for good, message in self._checks():
            if not good:
                raise UsageError(message)

    def _checks(self) -> list[tuple[bool, str]]:
        legacy = self.mode is Mode.LEGACY
        return [
            (math.isfinite(self.interval) and self.interval > 0, "interval must be > 0"),
            (math.isfinite(self.speed) and self.speed > 0, "speed must be > 0"),
            (0.0 <= self.duplicate_rate <= 1.0, "duplicate rate must be in [0, 1]"),
            (0.0 <= self.cut_rate <= 1.0, "cut rate must be in [0, 1]"),
            (self.pause_after is None or self.pause_after > 0, "pause-after must be > 0"),
            (self.pause_for >= 0, "pause-for must be >= 0"),
            (self.start_offset >= 0, "start-offset must be >= 0"),
            (self.max_seconds is None or self.max_seconds > 0, "max-seconds must be > 0"),
            (all(d >= 0 for d in self.retries.delays), "retry delays must be >= 0"),
            (
                not (legacy and self.duplicate_rate),
                "duplicate rate needs --mode current (legacy has no Idempotency-Key)",
            ),
            (not (legacy and self.cut_rate), "cut uploads need --mode current (legacy never retries)"),
        ]
