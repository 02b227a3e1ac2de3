"""free_port, which picks every port of the local stack, the soak and the tests: never one
that a server already holds, never one from the ephemeral range (an outgoing connection may
take it before the server it was chosen for binds it), never the same one twice."""

from __future__ import annotations

import socket

from omi_receiver.devtools import emulators


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    floor = emulators._ephemeral_floor()
    ports = [emulators.free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    for port in ports:
        assert emulators._LOWEST_PORT <= port < floor
        with socket.create_server(("127.0.0.1", port)):
            pass


def test_a_port_something_listens_on_is_never_returned(monkeypatch):
    floor = emulators._ephemeral_floor()
    with socket.create_server(("127.0.0.1", floor - 1)) as held:
        taken = held.getsockname()[1]
        # random chooses the port: make its first choice the held one
        choices = iter([taken, floor - 2])
        monkeypatch.setattr(emulators.random, "randrange", lambda *_: next(choices))
        monkeypatch.setattr(emulators, "_handed_out", set())  # forget the other tests' ports
        assert emulators.free_port() == floor - 2
