"""An assembler in a process of its own, driven by the bench through a 1-process pool.

The bench process hosts the fault proxy and publishes chunks; keeping the assembler apart
means `getrusage` here counts only the assembler's CPU (its threads, gRPC pulls and
storage calls) and VmHWM only its memory.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import resource
import sys
import threading
import time

from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler import Assembler
from omi_receiver.runtime.config import Config
from omi_receiver.runtime.contract import Chunk, now_us

_asm: Instrumented | None = None
_now_us: int | None = None  # a virtual clock, set per call; None: real time


class Instrumented(Assembler):
    """Records which uids this instance flushed and how long its pulls took."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.flushed: list[str] = []
        self.pulls: list[tuple[int, float]] = []  # (messages, seconds)
        self._lock = threading.Lock()
        # Wall time spent waiting on each kind of storage request (leaf Store methods only).
        self.waits: dict[str, float] = {}
        self.collects = self.empty_collects = 0
        for name in ("read_state", "write_state", "upload", "compose", "delete_quietly"):
            setattr(self.store, name, self._timed(name, getattr(self.store, name)))
        self.collector.collect = self._counted(self.collector.collect)
        self.collector.pull = self._recorded(self.collector.pull)

    def _timed(self, name, method):
        def timed(*args, **kwargs):
            started = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                with self._lock:
                    self.waits[name] = self.waits.get(name, 0.0) + time.monotonic() - started

        return timed

    def flush_user(self, uid, chunks):
        stats = super().flush_user(uid, chunks)
        with self._lock:
            self.flushed.append(uid)
        return stats

    def _counted(self, collect):
        """Counts the collecting rounds, and those that brought nothing."""

        def counted(rounds):
            by_uid, stopped = collect(rounds)
            with self._lock:
                self.collects += 1
                self.empty_collects += not by_uid
            return by_uid, stopped

        return counted

    def _recorded(self, pull):
        def recorded(subscription):
            started = time.monotonic()
            received = pull(subscription)
            self.pulls.append((len(received), round(time.monotonic() - started, 3)))
            return received

        return recorded


def pool(env: dict, config: Config) -> concurrent.futures.ProcessPoolExecutor:
    """A fresh process (spawn: no gRPC state inherited) holding one assembler."""
    return concurrent.futures.ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_setup, initargs=(env, config)
    )


def _setup(env: dict, config: Config) -> None:
    global _asm
    # The assembler logs a JSON line per flush to stdout, as in Cloud Run: keep the cost of
    # formatting them, drop the lines (the bench prints its own progress).
    sys.stdout = open(os.devnull, "w")
    os.environ.update(env)
    for reset in (clients.set_publisher, clients.set_subscriber, clients.set_storage):
        reset(None)
    _asm = Instrumented(config, clock=lambda: now_us() if _now_us is None else _now_us)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status_mib(field: str) -> float:
    """VmRSS / VmHWM of this process. Not ru_maxrss: after fork+exec it still holds the
    parent's high-water mark (the bench process is large while it publishes)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _measure(fn) -> dict:
    ops_before = dataclasses.asdict(_asm.store.ops)
    _asm.flushed.clear()
    _asm.pulls.clear()
    _asm.waits = {}
    _asm.collects = _asm.empty_collects = 0
    rss_before = _status_mib("VmRSS")
    cpu, wall = _cpu(), time.monotonic()
    out = fn()
    cpu, wall = _cpu() - cpu, time.monotonic() - wall
    ops = {k: v - ops_before[k] for k, v in dataclasses.asdict(_asm.store.ops).items()}
    return {
        "out": out,
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "ops": ops,
        "flushed": list(_asm.flushed),
        "pulls": list(_asm.pulls),
        "waits_s": {k: round(v, 4) for k, v in _asm.waits.items()},
        "collects": _asm.collects,
        "empty_collects": _asm.empty_collects,
        "rss_before_mib": round(rss_before, 1),
        "peak_rss_mib": round(_status_mib("VmHWM"), 1),
    }


def run_pass(at_us: int | None = None, shard: int = 0) -> dict:
    """One `run_pass` of `shard` with the clock standing at `at_us` (None: real time), measured."""
    global _now_us
    _now_us = at_us
    return _measure(lambda: dataclasses.asdict(_asm.run_pass(shard)))


def flush_series(uid: str, flushes: int, chunks_per_flush: int, rate: int, start_us: int) -> list[dict]:
    """`flushes` consecutive `flush_user` calls on one uid, each measured (no Pub/Sub)."""
    global _now_us
    body = os.urandom(rate * 2)
    out, t = [], start_us
    for _ in range(flushes):
        chunks = []
        for _ in range(chunks_per_flush):
            t += 1_000_000
            chunks.append(Chunk(uid, rate, t, os.urandom(8).hex(), body))
        _now_us = t + 15_000_000
        m = _measure(functools.partial(_flush_as_dict, uid, chunks))
        out.append({k: m[k] for k in ("cpu_s", "wall_s", "waits_s", "ops")})
    return out


def _flush_as_dict(uid: str, chunks: list) -> dict:
    return dataclasses.asdict(_asm.flush_user(uid, chunks))


def flush_round(uids: list[str], chunks_per_flush: int, rate: int, start_us: int, workers: int) -> dict:
    """One 60-chunk flush for each uid, `workers` at a time: a pass's flush stage as designed
    (every user's minute in one batch), without Pub/Sub."""
    global _now_us
    body = os.urandom(rate * 2)
    batches = {
        uid: [
            Chunk(uid, rate, start_us + (i + 1) * 1_000_000, os.urandom(8).hex(), body) for i in range(chunks_per_flush)
        ]
        for uid in uids
    }
    _now_us = start_us + (chunks_per_flush + 15) * 1_000_000

    def flush_all():
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            return sum(1 for _ in pool.map(lambda uid: _asm.flush_user(uid, batches[uid]), uids))

    return _measure(flush_all)
