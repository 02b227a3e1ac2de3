"""Fixtures the integration tests share: the CLI's (test_cli.py, test_cli_dlq.py) and the
assembler's clock."""

from __future__ import annotations

import socket

import pytest
from assembly import Clock

from omi_receiver.devtools.emulators import free_port
from omi_receiver.runtime import logs


@pytest.fixture
def clock():
    """The assembler's clock, which the test moves on."""
    return Clock()


@pytest.fixture
def env(stack_config, monkeypatch):
    """The functions' settings as environment variables, as the CLI reads them."""
    monkeypatch.setattr(logs, "_to_stderr_above_info", False)  # cli.main sets it for the process
    for name, value in {
        "RECORDINGS_BUCKET": stack_config.recordings_bucket,
        "CHUNKS_TOPIC": stack_config.chunks_topic,
        "CHUNKS_SUBSCRIPTION": stack_config.chunks_subscription,
        "DEAD_LETTER_TOPIC": stack_config.dead_letter_topic,
        "RECORDINGS_TOPIC": stack_config.recordings_topic,
    }.items():
        monkeypatch.setenv(name, value)
    return stack_config


@pytest.fixture
def silent_port():
    """A port whose connections the kernel accepts (listen backlog) but that never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture(params=["refused", "silent"])
def dead_port(request) -> tuple[int, str]:
    """(port, the reason the error gives): nothing listens there, or nothing ever answers."""
    if request.param == "refused":
        return free_port(), "connection refused"
    return request.getfixturevalue("silent_port"), "no answer in time"
