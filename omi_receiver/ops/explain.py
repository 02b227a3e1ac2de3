"""Failures of Google Cloud calls, told to an operator in one line: no credentials, or a
service out of reach (where, for what, why, and what to check)."""

from __future__ import annotations

import os
import re

import requests
from google.api_core import exceptions
from google.auth.exceptions import TransportError

# What to tell a person when google.auth finds no credentials (the CLI's commands).
NO_CREDENTIALS = (
    "no Google Cloud credentials found: run `gcloud auth application-default login`, "
    "or for the local stack export .local/stack.env (`set -a; . .local/stack.env; set +a`)"
)

# Which variable points each service at an emulator (its value is named in errors).
EMULATOR_VARS = {"Cloud Storage": "STORAGE_EMULATOR_HOST", "Pub/Sub": "PUBSUB_EMULATOR_HOST"}
# What a request ends in when the service is out of reach: retries ran out, or a transport
# error was not retried (Cloud Storage speaks HTTP through requests and google.auth).
UNREACHABLE = (exceptions.RetryError, requests.RequestException, TransportError)


def out_of_reach(service: str, what: str, exc: BaseException) -> str:
    """One line for a service that could not be reached: where (the emulator host when one
    is set), for what (bucket, subscription), why, and what to check."""
    var = EMULATOR_VARS[service]
    host = os.environ.get(var)
    where = f"{service} at {var}={host}" if host else service
    hint = "is the local stack up (`make status`)?" if host else "check the network and try again"
    return f"cannot reach {where} for {what}: {_why(exc)}; {hint}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, exceptions.RetryError) and exc.cause is not None:
        exc = exc.cause  # retried until the deadline: the last attempt says why
    text = str(exc)
    if "connection refused" in text.lower():
        return "connection refused"
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)  # DNS and socket errors in requests' text
    if errno:
        return errno.group(1).strip().lower()
    if isinstance(exc, (exceptions.DeadlineExceeded, TimeoutError)) or "timed out" in text.lower():
        return "no answer in time"
    return (text.splitlines() or [type(exc).__name__])[0][:200]
