"""One soak run, start to end, as a sequence of named steps (`Soak._run`); whatever a step
started is stopped again however the run ends."""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.soak import backends, devices, faults, report, verify
from bench.soak.assembler_log import LogReader
from bench.soak.driver import AssemblerDriver, functions
from bench.soak.report import Console, Record
from bench.soak.settings import Settings
from omi_receiver.devtools import resources
from omi_receiver.devtools.functions import FunctionServer
from omi_receiver.runtime import clients
from omi_receiver.runtime.config import Config

PROGRESS_EVERY_S = 30.0


def run(s: Settings, pubsub_host: str | None = None, gcs_url: str | None = None) -> dict:
    """Run a soak; its result (soak.json's content). Emulators given by host are used as
    they are (the test suite's), else the soak starts its own."""
    return Soak(s, pubsub_host, gcs_url).run()


class Soak:
    def __init__(self, s: Settings, pubsub_host: str | None = None, gcs_url: str | None = None):
        self.s = s
        self.given = (pubsub_host, gcs_url)
        self.rng = random.Random(s.seed)  # when the assembler is killed
        self.cleanup: list[Callable[[], None]] = []
        self.console = Console(s.quiet)

    def say(self, text: str) -> None:
        self.console.say(text)

    def run(self) -> dict:
        s = self.s
        s.check()
        own_dir = s.workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="omi-soak-")) if own_dir else s.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        saved_env = {k: os.environ.get(k) for k in backends.CLIENT_ENV}
        passed = False
        try:
            result = self._run(workdir)
            passed = result["passed"]
            return result
        finally:
            self._clean_up(saved_env)
            if own_dir and passed and not s.keep_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                self.say(f"logs and ledgers kept in {workdir}")

    def _run(self, workdir: Path) -> dict:
        record = Record(started_at=dt.datetime.now(dt.UTC), code=report.provenance(self.s.code))
        config, env, gcs_url = self._backends(workdir)
        proxy = self._storage_proxy(gcs_url)
        ingest, assembler = self._functions(env, proxy.url, workdir)
        record.devices = self._devices(workdir)
        log = LogReader(assembler.log)
        driver = self._driver(assembler, workdir)
        fault = faults.Faults(driver, proxy, self.s, self.rng, self.console)
        self._sample_load(record)
        self._stream(record, f"{ingest.url}/soak/{config.tokens[0]}", driver, fault, log)
        bucket = backends.bucket(gcs_url, config.recordings_bucket)
        self._drain(record, bucket, driver, log)
        self._inspect(record, config, bucket, fault)
        result = report.build(self.s, record, self.console, log, driver, fault)
        report.print_table(result, self.s)
        return result

    # --- the steps ----------------------------------------------------------------------

    def _backends(self, workdir: Path) -> tuple[Config, dict[str, str], str]:
        """Emulators, fresh resources provisioned by the code under test; (config, the
        functions' environment, fake-gcs-server's URL)."""
        hosts = backends.start_emulators(self.given, workdir, self.cleanup.append)
        backends.point_clients(hosts)
        tag = uuid.uuid4().hex[:8]
        config = backends.soak_config(self.s, tag)
        env = backends.function_env(self.s, config, hosts.pubsub)
        backends.provision(self.s, env, hosts.gcs)
        self.say(f"emulators up (pubsub {hosts.pubsub}, gcs {hosts.gcs}); resources *-{tag}")
        return config, env, hosts.gcs

    def _storage_proxy(self, gcs_url: str):
        proxy = faults.storage_proxy(gcs_url, self.s)
        self.cleanup.append(proxy.stop)
        return proxy

    def _functions(self, env: dict[str, str], storage_url: str, workdir: Path) -> tuple[FunctionServer, ...]:
        ingest, assembler = functions(self.s, env, storage_url, workdir)
        for server in (ingest, assembler):
            self.cleanup.append(server.stop)
            server.start(timeout=90)
        self.say(f"ingest :{ingest.port}, assembler :{assembler.port}, storage proxy {storage_url}")
        return ingest, assembler

    def _devices(self, workdir: Path) -> list[devices.Device]:
        planned = devices.plan_devices(self.s)
        devices.prepare(planned, workdir)
        return planned

    def _driver(self, assembler: FunctionServer, workdir: Path) -> AssemblerDriver:
        driver = AssemblerDriver(assembler, self.s, self.console, workdir)
        self.cleanup.append(driver.shut_down)
        return driver

    def _sample_load(self, record: Record) -> None:
        """The 1-minute load average every 5 s until the run ends."""
        stop = threading.Event()
        self.cleanup.append(stop.set)

        def sample() -> None:
            while not stop.wait(5.0):
                record.load.append(os.getloadavg()[0])

        threading.Thread(target=sample, daemon=True, name="load").start()

    def _stream(self, record: Record, url: str, driver: AssemblerDriver, fault: faults.Faults, log: LogReader) -> None:
        """Every device streams its audio while the assembler ticks and the faults strike;
        then the faults stop."""
        s = self.s
        fleet = devices.Fleet(record.devices, s, url)
        self.cleanup.append(fleet.stop.set)
        fault.start()
        driver.start()
        started = time.monotonic()
        fleet.start()
        self.say(
            f"{len(fleet.devices)} devices streaming for {s.wall_seconds:.0f} s at {s.speed:g}x; "
            f"faults: kills every {s.kill_spacing[0]:.0f}-{s.kill_spacing[1]:.0f} s, storage errors "
            f"{s.error_rate:.0%}, duplicate POSTs {s.duplicate_rate:.0%}, cut uploads {s.cut_rate:.1%}, "
            f"pauses {s.pause_seconds:.0f} s (gap {s.session_gap} s)"
        )
        self._watch(fleet, started + s.wall_seconds + 120, driver, fault, log)
        record.stuck = fleet.finish()
        record.streaming_s = time.monotonic() - started
        self.say(
            f"devices done after {record.streaming_s:.0f} s"
            + (f"; still running: {record.stuck}" if record.stuck else "")
        )
        record.storage_requests, record.injected = fault.stop()

    def _watch(
        self, fleet: devices.Fleet, deadline: float, driver: AssemblerDriver, fault: faults.Faults, log: LogReader
    ) -> None:
        """Until the devices are done (or `deadline`): follow the log, say how it goes."""
        next_report = time.monotonic() + PROGRESS_EVERY_S
        while fleet.alive() and time.monotonic() < deadline:
            time.sleep(1.0)
            log.poll()
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY_S
                self.say(
                    f"{fleet.alive()} devices streaming; passes {len(log.passes)}, kills {len(fault.kills)}, "
                    f"storage errors {sum(fault.proxy.injected.values())}, events {dict(log.events)}"
                )

    def _drain(self, record: Record, bucket, driver: AssemblerDriver, log: LogReader) -> None:
        """Ticks go on, without faults, until the assembler is idle: no pass pulled anything
        for longer than the ack deadline, the last one pulled nothing, and no recording is
        open. Bounded by the drain timeout."""
        started = last_busy = time.monotonic()
        while time.monotonic() - started < self.s.drain_seconds:
            time.sleep(1.0)
            for p in log.poll():
                if p.get("pulled", 0) or p.get("retried", 0):
                    last_busy = p["_seen"]
            quiet_for = time.monotonic() - max(last_busy, driver.last_kill_at)
            if quiet_for < self.s.ack_deadline + 2 or not log.passes:
                continue
            if backends.open_states(bucket)[1] == 0 and log.passes[-1].get("pulled", 0) == 0:
                record.drained = True
                break
        driver.join()
        log.poll()
        record.drain_s = time.monotonic() - started
        self.say(f"assembler {'drained' if record.drained else 'NOT drained'} after {record.drain_s:.0f} s")

    def _inspect(self, record: Record, config: Config, bucket, fault: faults.Faults) -> None:
        """What is left on the subscriptions and in the bucket, and every device's recordings
        against its ledgers."""
        subscriber = clients.subscriber()
        record.dead_lettered = len(
            backends.drain_subscription(subscriber, config.subscription_path(config.dead_letter_hold_subscription))
        )
        events = backends.drain_subscription(
            subscriber, config.subscription_path(resources.recordings_subscription(config))
        )
        record.events_published = len(events)
        record.events = collections.Counter(json.loads(m.data).get("name") for m in events)
        record.undelivered = len(
            backends.drain_subscription(subscriber, config.subscription_path(config.chunks_subscription), timeout=2.0)
        )
        record.open_recordings = backends.open_states(bucket)[1]
        record.work_left = [blob.name for blob in bucket.list_blobs(prefix=report.WORK_PREFIX)]
        record.verification = verify.verify(record.devices, bucket, self.s, fault.assembler_events, record.events)

    def _clean_up(self, saved_env: dict[str, str | None]) -> None:
        """Stop everything the steps started (last first); restore this process's clients."""
        for action in reversed(self.cleanup):
            with contextlib.suppress(Exception):
                action()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        backends.point_clients(None)
