"""The HTTP side of a simulated device: one chunk POSTed with the Omi backend's retries
(`Sender.send`), a repeated POST of an acknowledged chunk (`Sender.repeat`), cut uploads on
first attempts, and the current sender's circuit breaker (`Breaker`).

current: a fresh Idempotency-Key per chunk, the same on its retries; retries after each of
`Retries.delays` on network errors, 5xx, 408 and 429, other statuses are final; redirects
are not followed. legacy: no key, one attempt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import threading
import time
import uuid

import requests

from omi_receiver.devtools.simulate.cuts import Cut, headers, plan_cut, send_cut
from omi_receiver.devtools.simulate.ledger import Summary
from omi_receiver.devtools.simulate.options import Mode, Options, Retries

RETRYABLE_STATUSES = frozenset({408, 429})


@dataclasses.dataclass
class Outcome:
    """One POST's result; `status` None for a network error or a timeout."""

    ok: bool
    status: int | None
    body: bytes = b""

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in RETRYABLE_STATUSES


@dataclasses.dataclass(frozen=True)
class Ack:
    """An acknowledged chunk: the receiver's chunk_id (else the key) and the key it was sent with."""

    chunk_id: str | None
    key: str | None


def _response_chunk_id(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("chunk_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


class Sender:
    """POSTs the chunks of one stream to `url` as the sender of `options.mode` does, one at a
    time, and counts every POST in `summary` (sent, retried, cuts, duplicates, statuses)."""

    def __init__(self, session: requests.Session, url: str, options: Options, summary: Summary, stop: threading.Event):
        self.session, self.url, self.options, self.summary, self.stop = session, url, options, summary, stop
        self.rng = random.Random(options.seed)  # cut and duplicate decisions

    def send(self, body: bytes) -> Ack | None:
        """POST one chunk until it is acknowledged or the sender gives up (None)."""
        current = self.options.mode is Mode.CURRENT
        key = str(uuid.uuid4()) if current else None
        outcome = self._post(body, key, self._cut_for(body))
        if current:
            outcome = self._retry(outcome, body, key)
        return Ack(_response_chunk_id(outcome.body) or key, key) if outcome.ok else None

    def repeat(self, body: bytes, ack: Ack) -> None:
        """With probability `duplicate_rate`, POST an acknowledged chunk again, same body and
        key: what a retry after a lost response looks like. Its answer changes nothing the
        sender knows, so it is only counted."""
        if self.options.duplicate_rate and self.rng.random() < self.options.duplicate_rate:
            self.summary.duplicates += 1
            self._post(body, ack.key)

    def _retry(self, outcome: Outcome, body: bytes, key: str | None) -> Outcome:
        for delay in self.options.retries.delays:
            if outcome.ok or not outcome.retryable or self.stop.wait(delay):
                break
            self.summary.retried += 1
            outcome = self._post(body, key)
        return outcome

    def _cut_for(self, body: bytes) -> Cut | None:
        """Whether this first attempt is cut part-way (`cut_rate`), and how."""
        rate = self.options.cut_rate
        return plan_cut(self.rng, len(body)) if rate and self.rng.random() < rate else None

    def _post(self, body: bytes, key: str | None, cut: Cut | None = None) -> Outcome:
        self.summary.sent += 1
        if cut is not None:
            return self._post_cut(body, key, cut)
        try:
            response = self.session.post(
                self.url, data=body, headers=headers(key), timeout=self.options.timeout, allow_redirects=False
            )
        except requests.RequestException:
            self._count("error")
            return Outcome(False, None)
        self._count(str(response.status_code))
        return Outcome(200 <= response.status_code < 300, response.status_code, response.content)

    def _post_cut(self, body: bytes, key: str | None, cut: Cut) -> Outcome:
        """A POST cut part-way (send_cut): to the sender, a network error."""
        self.summary.cuts += 1
        self._count("cut")
        with contextlib.suppress(OSError):
            send_cut(self.session, self.url, body, key, cut, self.options.timeout[0])
        return Outcome(False, None)

    def _count(self, status: str) -> None:
        self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1


class Breaker:
    """The current sender's circuit breaker over failed chunks in a row: `breaker_threshold`
    of them skip sends for `breaker_cooldown` wall-clock seconds; `disable_after` of them
    disable the webhook for good (`summary.disabled`)."""

    def __init__(self, retries: Retries, summary: Summary):
        self.retries, self.summary = retries, summary
        self.failures_in_row = 0
        self.open_until = 0.0

    def closed(self) -> bool:
        """Whether a batch released now is sent (else it is dropped)."""
        return not self.summary.disabled and time.monotonic() >= self.open_until

    def success(self) -> None:
        self.failures_in_row = 0

    def failure(self) -> None:
        self.failures_in_row += 1
        if self.failures_in_row >= self.retries.disable_after:
            self.summary.disabled = True
        elif self.failures_in_row >= self.retries.breaker_threshold:
            self.summary.breaker_trips += 1
            self.open_until = time.monotonic() + self.retries.breaker_cooldown
