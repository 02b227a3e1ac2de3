"""The one way a function instance keeps something for its lifetime: built on first use.

Importing a module then needs no credentials or settings, one instance reuses one client
(or config, or assembler), and tests can put their own in with `set`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    def __init__(self, build: Callable[[], T]):
        self._build = build
        self._value: T | None = None
        self._lock = threading.Lock()

    def get(self) -> T:
        value = self._value
        if value is None:
            with self._lock:  # the first requests may arrive together: build once
                if self._value is None:
                    self._value = self._build()  # a failure leaves it unbuilt, to try again
                value = self._value
        return value

    def set(self, value: T | None) -> None:
        """Use `value` from now on; None builds a new one on next use."""
        self._value = value
