"""Pull, ack and release on a Pub/Sub pull subscription: the one helper the assembler's
passes and the dead-letter commands (omi_receiver.ops.deadletter) both use.

A pull raises what the client raises: what an error means (nothing waiting, or Pub/Sub out
of reach) is the caller's to decide. Acks and releases go in slices of ACK_IDS_PER_REQUEST.
A failed ack raises (the message is not consumed); a failed release is logged
`release_failed` and otherwise ignored: the messages come back after the ack deadline
anyway, only later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from google.api_core import exceptions, gapic_v1

from .. import logs

# How long a pull may wait for messages. Pub/Sub may hold an empty pull up to it; the
# emulator holds one ~1 s at this value and answers at once when given under ~1 s.
PULL_TIMEOUT_SECONDS = 2.0
# Pub/Sub takes at most this many ack ids per Acknowledge or ModifyAckDeadline request.
ACK_IDS_PER_REQUEST = 2500


@dataclasses.dataclass(frozen=True)
class Subscription:
    """One subscription through one subscriber client. `retry` and `timeout` bound each
    ack and release request (the client's defaults unless given)."""

    subscriber: Any
    path: str
    retry: Any = gapic_v1.method.DEFAULT
    timeout: Any = gapic_v1.method.DEFAULT

    def pull(self, max_messages: int, wait_seconds: float | None = None) -> list:
        """One pull of at most `max_messages` (`ReceivedMessage`s), never retried, given
        `wait_seconds` (default PULL_TIMEOUT_SECONDS)."""
        response = self.subscriber.pull(
            request={"subscription": self.path, "max_messages": max_messages},
            timeout=PULL_TIMEOUT_SECONDS if wait_seconds is None else wait_seconds,
            retry=None,
        )
        return list(response.received_messages)

    def ack(self, ack_ids: list[str]) -> None:
        for ids in _slices(ack_ids):
            self.subscriber.acknowledge(
                request={"subscription": self.path, "ack_ids": ids}, retry=self.retry, timeout=self.timeout
            )

    def release(self, ack_ids: list[str]) -> None:
        """Hand messages back at once (nack) instead of at the end of the ack deadline."""
        for ids in _slices(ack_ids):
            try:
                self.subscriber.modify_ack_deadline(
                    request={"subscription": self.path, "ack_ids": ids, "ack_deadline_seconds": 0},
                    retry=self.retry,
                    timeout=self.timeout,
                )
            except exceptions.GoogleAPIError as exc:  # RetryError included
                logs.warning("release_failed", error=repr(exc)[:300], messages=len(ack_ids))


def _slices(ack_ids: list[str]):
    for start in range(0, len(ack_ids), ACK_IDS_PER_REQUEST):
        yield ack_ids[start : start + ACK_IDS_PER_REQUEST]
