"""Section fractional_cpu: ingest on a fraction of a CPU, at concurrency 1 (issue 15).

Cloud Run functions offer 0.083-0.583 vCPU (with 128 MiB-1 GiB) only at concurrency 1. Here
each server (functions-framework, as bench/ingest.py starts it) runs in a cgroup of its own
with a CFS quota of that many CPUs (bench/cpu_quota.py: 100 ms period), against a private
Pub/Sub emulator, and is fed the way the Omi backend feeds it: one connection, one 1-s
16 kHz PCM chunk of real speech (samples/speech-16k.wav) after another.

Per CHUNK_ENCODING and quota:
  cold_start    from starting the process to the first 200: the time until the port
                accepts, then the first POST (sent on the first connection that succeeds),
                then CATCH_UP more POSTs back to back, as the sender drains what queued
                meanwhile. PLAN["cold_repeats"] fresh processes; the last one goes on to:
  cadence       POSTs at the sender's real cadence, one a second (latency, CPU per POST
                including what the idle process spends between POSTs)
  back_to_back  POSTs one after another (a sender catching up): CPU per POST alone
  memory        peak of the process tree (gunicorn master + worker): the sum of VmHWM
                (each process's own peak; shared pages count twice) and the largest sum
                of Pss seen after a POST (shared pages split)
CPU is the cgroup's own accounting (cpuacct), exited processes included. The emulator and
this client run outside the quota, on the same (shared, 2-core) machine.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.client
import time
import uuid
import wave
from pathlib import Path

from google.cloud import pubsub_v1

from bench.common import PROJECT, ROOT, Emulators, median, percentile
from bench.cpu_quota import PERIOD_US, CpuQuota
from bench.ingest import TOKEN, _warm_emulator
from omi_receiver.devtools import emulators
from omi_receiver.devtools.functions import FunctionServer
from omi_receiver.runtime.codec import Encoding

QUOTAS = (0.083, 0.167, 0.333, 0.583, 1.0)
ENCODINGS = tuple(e.value for e in Encoding)  # CHUNK_ENCODING: pcm, flac
SAMPLE = ROOT / "samples" / "speech-16k.wav"
CHUNK_SECONDS = 1.0
CATCH_UP = 4
BUDGET_MS = 1000  # the brief's bound on one POST: the sender sends the next chunk a second later
PLAN = {  # quick, full
    "cold_repeats": (1, 3),
    "cadence_posts": (8, 60),
    "back_to_back_posts": (20, 100),
    "emulator_warmup": (2_000, 10_000),
}


@dataclasses.dataclass
class _QuotaServer(FunctionServer):
    """FunctionServer whose process joins `quota`'s cgroup before it execs (and so forks)."""

    quota: CpuQuota | None = None

    def argv(self) -> list[str]:
        return self.quota.wrap(super().argv())


class _Sender:
    """One keep-alive connection posting chunks, as the Omi backend does for one user."""

    def __init__(self, port: int, uid: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.path = f"/{TOKEN}?sample_rate=16000&uid={uid}"
        self.reconnects = 0

    def connect_when_open(self, proc, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.conn.connect()
                return
            except ConnectionRefusedError:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode} before listening") from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server did not listen within {timeout:.0f} s") from None
                time.sleep(0.005)

    def post(self, chunk: bytes) -> float:
        """Milliseconds until the whole 200 answer is read; anything else raises."""
        headers = {"Content-Type": "application/octet-stream", "Idempotency-Key": str(uuid.uuid4())}
        started = time.perf_counter()
        try:
            resp = self._send(chunk, headers)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # gunicorn closed the idle keep-alive connection (after 2 s): a new one, as a sender would.
            self.conn.close()
            self.reconnects += 1
            resp = self._send(chunk, headers)
        body = resp.read()
        ms = (time.perf_counter() - started) * 1000
        if resp.status != 200:
            raise RuntimeError(f"POST answered {resp.status}: {body[:300]!r}")
        return ms

    def _send(self, chunk: bytes, headers: dict) -> http.client.HTTPResponse:
        self.conn.request("POST", self.path, chunk, headers)
        return self.conn.getresponse()

    def close(self) -> None:
        self.conn.close()


def _chunks() -> list[bytes]:
    with wave.open(str(SAMPLE)) as wav:
        frames = wav.readframes(wav.getnframes())
    size = int(wav.getframerate() * CHUNK_SECONDS) * wav.getsampwidth()
    return [frames[i : i + size] for i in range(0, len(frames) - size + 1, size)]


def _memory(pids: list[int]) -> dict:
    """Sum over `pids` of VmHWM (peak RSS) and of Pss now, in MiB."""
    hwm = pss = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        hwm += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        pss += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
    return {"hwm_mib": round(hwm / 1024, 1), "pss_mib": round(pss / 1024, 1)}


def _latencies(ms: list[float]) -> dict:
    return {
        "posts": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1),
        "over_budget": sum(m > BUDGET_MS for m in ms),
    }


class _Run:
    """One server under one quota: a cold start, then (if asked) the warm phases."""

    def __init__(self, cpus: float, uid: str, env: dict, log_path: Path, chunks: list[bytes]):
        self.chunks, self.sent, self.peak = chunks, 0, {"hwm_mib": 0.0, "pss_mib": 0.0}
        port = emulators.free_port()
        self.sender = _Sender(port, uid)
        self.quota = CpuQuota(cpus)
        self.server = _QuotaServer("receive_chunk", ROOT / "main.py", port, log_path, env, quota=self.quota)

    def close(self) -> None:
        self.sender.close()
        try:
            self.server.stop()
        finally:
            self.quota.close()

    def _post(self) -> float:
        ms = self.sender.post(self.chunks[self.sent % len(self.chunks)])
        self.sent += 1
        now = _memory(self.quota.pids())
        self.peak = {k: max(self.peak[k], now[k]) for k in now}
        return ms

    def cold_start(self) -> dict:
        started = time.perf_counter()
        proc = self.server.spawn()
        self.sender.connect_when_open(proc)
        port_open = time.perf_counter() - started
        first = self._post()
        cpu = self.quota.usage_seconds()
        catch_up = [self._post() for _ in range(CATCH_UP)]
        return {
            "port_open_s": round(port_open, 3),
            "first_post_ms": round(first, 1),
            "first_200_s": round(port_open + first / 1000, 3),
            "catch_up_ms": [round(m, 1) for m in catch_up],
            "cpu_s_to_first_200": round(cpu, 3),
        }

    def phase(self, posts: int, interval: float, delay: float = 0.0) -> dict:
        """`posts` POSTs, each `interval` s after the previous one was sent (0: back to back),
        the first after `delay` s."""
        time.sleep(delay)
        self.sender.close()  # idle since the last phase: start on a fresh connection
        cpu, throttle = self.quota.usage_seconds(), self.quota.throttling()
        ms, next_at = [], time.monotonic()
        for _ in range(posts):
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic()) if interval else 0
            ms.append(self._post())
        after = self.quota.throttling()
        periods = after["periods"] - throttle["periods"]
        return {
            **_latencies(ms),
            "cpu_ms_per_post": round((self.quota.usage_seconds() - cpu) * 1000 / posts, 2),
            "throttled_periods_pct": round(100 * (after["throttled"] - throttle["throttled"]) / max(1, periods), 1),
            "latencies_ms": [round(m, 1) for m in ms],
        }


def _cold_starts(cpus: float, env: dict, tmp: Path, chunks: list[bytes], repeats: int, stack) -> tuple:
    """`repeats` cold starts, one server at a time. The last server is left running, to be
    closed by `stack`; returns (the cold-start result, that server)."""
    colds = []
    for repeat in range(repeats):
        run = _Run(cpus, _uid(cpus, repeat), env, tmp / f"ingest-{cpus}-{repeat}.log", chunks)
        stack.callback(run.close)  # closing twice is harmless
        colds.append(run.cold_start())
        if repeat < repeats - 1:
            run.close()
    medians = {k: round(median([c[k] for c in colds]), 3) for k in ("port_open_s", "first_post_ms", "first_200_s")}
    return {**medians, "repeats": colds}, run


def _uid(cpus: float, repeat: int) -> str:
    """A user per server, so the published messages tell whose they are."""
    return f"bench-q{round(cpus * 1000)}-{repeat}"


def _measure(env: dict, tmp: Path, chunks: list[bytes], plan: dict, log) -> dict:
    """Every quota for one encoding. Cold starts and back-to-back runs go one server at a
    time. The 1-s cadence runs all servers at once, their POSTs spread over each second: a
    POST needs a few ms of CPU a second, so they hardly meet, and a full run stays short."""
    out: dict[str, dict] = {}
    with contextlib.ExitStack() as stack:
        runs = {}
        for cpus in QUOTAS:
            cold, runs[cpus] = _cold_starts(cpus, env, tmp, chunks, plan["cold_repeats"], stack)
            out[str(cpus)] = {"cold_start": cold}
            log(
                f"  {cpus:5} CPU: cold start {cold['first_200_s']} s = port open {cold['port_open_s']} s "
                f"+ first POST {cold['first_post_ms']} ms"
            )
        with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
            spread = CHUNK_SECONDS / len(runs)
            futures = {
                cpus: pool.submit(run.phase, plan["cadence_posts"], CHUNK_SECONDS, i * spread)
                for i, (cpus, run) in enumerate(runs.items())
            }
            for cpus, future in futures.items():
                out[str(cpus)]["cadence"] = future.result()
        for cpus, run in runs.items():
            out[str(cpus)]["back_to_back"] = run.phase(plan["back_to_back_posts"], 0)
            out[str(cpus)]["memory"] = run.peak
            log(_line(cpus, out[str(cpus)]))
    return out


def _line(cpus: float, r: dict) -> str:
    cad, b2b, mem = r["cadence"], r["back_to_back"], r["memory"]
    return (
        f"  {cpus:5} CPU: 1/s p50/p99/max {cad['p50_ms']}/{cad['p99_ms']}/{cad['max_ms']} ms "
        f"{cad['cpu_ms_per_post']} CPU-ms; back to back p50/p99 {b2b['p50_ms']}/{b2b['p99_ms']} ms "
        f"{b2b['cpu_ms_per_post']} CPU-ms; peak {mem['hwm_mib']} MiB VmHWM, {mem['pss_mib']} MiB Pss"
    )


def run(quick: bool, log=print) -> dict:
    plan = {k: v[0] if quick else v[1] for k, v in PLAN.items()}
    chunks, results = _chunks(), {}
    with Emulators(gcs=False) as em:
        topic = "bench-fractional-chunks"
        topic_path = f"projects/{PROJECT}/topics/{topic}"
        pubsub_v1.PublisherClient().create_topic(name=topic_path)
        _warm_emulator(topic_path, plan["emulator_warmup"], log)
        # After the warm-up: it sees only ingest's messages, to tell which went out as FLAC.
        subscription = f"projects/{PROJECT}/subscriptions/bench-fractional-sub"
        pubsub_v1.SubscriberClient().create_subscription(name=subscription, topic=topic_path)
        for encoding in ENCODINGS:
            env = {**em.env, "INGEST_TOKENS": TOKEN, "CHUNKS_TOPIC": topic, "CHUNK_ENCODING": encoding}
            log(f"  CHUNK_ENCODING={encoding}")
            results[encoding] = _measure(env, em.tmp, chunks, plan, log)
            published = _pull_all(subscription, len(QUOTAS) * _posts_per_quota(plan))
            _add_published(results[encoding], published, plan["cold_repeats"], log)
    return {
        "summary": summarize(results),
        "encodings": results,
        "settings": {
            **plan,
            "quotas_cpu": QUOTAS,
            "cfs_period_ms": PERIOD_US / 1000,
            "catch_up_posts": CATCH_UP,
            "chunk": f"{CHUNK_SECONDS:g} s of 16 kHz PCM16 from {SAMPLE.name} ({len(chunks[0])} bytes)",
            "budget_ms": BUDGET_MS,
            "server": "functions-framework (gunicorn gthread, 1 worker) in a cgroup with a CFS quota",
        },
    }


def _pull_all(subscription: str, expected: int) -> dict[str, list[tuple[str, str, int]]]:
    """The `expected` messages (a pull waits while none is there), acked: per uid,
    (received_at, encoding, bytes) in received order."""
    subscriber, by_uid, got = pubsub_v1.SubscriberClient(), {}, 0
    while got < expected:
        response = subscriber.pull(subscription=subscription, max_messages=1000, timeout=30)
        got += len(response.received_messages)
        for received in response.received_messages:
            message = received.message
            attrs = message.attributes
            by_uid.setdefault(attrs["uid"], []).append(
                (attrs["received_at"], attrs.get("encoding", "pcm"), len(message.data))
            )
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
    return {uid: sorted(messages) for uid, messages in by_uid.items()}


def _posts_per_quota(plan: dict) -> int:
    return plan["cold_repeats"] * (1 + CATCH_UP) + plan["cadence_posts"] + plan["back_to_back_posts"]


def _add_published(results: dict, published: dict, repeats: int, log) -> None:
    """What each server published. Ingest publishes PCM until its codec has loaded in the
    background after the first request: how many of each cold start's posts went out as
    FLAC, and over the warm posts the share of FLAC messages and their mean size."""
    cold_posts = 1 + CATCH_UP
    for quota, r in results.items():
        for repeat, cold in enumerate(r["cold_start"]["repeats"]):
            messages = published.get(_uid(float(quota), repeat), [])[:cold_posts]
            cold["flac_posts"] = sum(e == "flac" for _, e, _ in messages)
        warm = published.get(_uid(float(quota), repeats - 1), [])[cold_posts:]
        r["published_warm"] = {
            "messages": len(warm),
            "flac_share": round(sum(e == "flac" for _, e, _ in warm) / max(1, len(warm)), 3),
            "mean_bytes": round(sum(n for *_, n in warm) / max(1, len(warm))),
        }
        flac_cold = [c["flac_posts"] for c in r["cold_start"]["repeats"]]
        log(
            f"  {quota:5} CPU: warm posts published {r['published_warm']}; "
            f"FLAC among the {cold_posts} posts of each cold start: {flac_cold}"
        )


def summarize(results: dict) -> dict:
    """Per encoding and quota: warm latency at the 1-s cadence, cold start, CPU, memory."""
    return {
        encoding: {
            quota: {
                "warm_p50_ms": r["cadence"]["p50_ms"],
                "warm_p99_ms": r["cadence"]["p99_ms"],
                "back_to_back_p99_ms": r["back_to_back"]["p99_ms"],
                "cold_start_s": r["cold_start"]["first_200_s"],
                "catch_up_max_ms": median([max(c["catch_up_ms"]) for c in r["cold_start"]["repeats"]]),
                "cpu_ms_per_post": r["back_to_back"]["cpu_ms_per_post"],
                "cpu_ms_per_post_at_1s": r["cadence"]["cpu_ms_per_post"],
                "peak_rss_mib": r["memory"]["hwm_mib"],
                "peak_pss_mib": r["memory"]["pss_mib"],
                "flac_share_warm": r["published_warm"]["flac_share"],
            }
            for quota, r in by_quota.items()
        }
        for encoding, by_quota in results.items()
    }
