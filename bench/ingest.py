"""Section 1, ingest: throughput, ack latency and server CPU per request of `receive_chunk`
served by functions-framework against the Pub/Sub emulator, beside a no-op floor function
(bench/floor_main.py), alternating A/B in the same run so both see the same machine.

The chunks topic has no subscription here: the assembler is not running, and the emulator
would otherwise keep every 32 KB message in its heap for the whole run.

The emulator is warmed up first (WARMUP_PUBLISHES Publish calls of one 32 KB chunk, timed in
blocks): its JVM compiles the publish path with C2 in the background for its first ~15,000
calls, and until it has, its round trip has multi-millisecond compile stalls (p99 4-5 ms) and a
slower p50. Real Pub/Sub is a long-running, warmed-up service; the first and last warm-up blocks
are reported, so a reader can see it settled. (An earlier run used C1 only, which removed the
stalls but left the compiled code slower: with a 1 ms pause between calls the round trip was
0.72-0.79 ms p50 with C1 only against 0.55-0.6 ms warmed up with C2.)

The Publish round trip is also measured alone (`publish_rtt`), twice: back to back, and with
the 1 ms pause between calls that a closed loop at 1 connection leaves the emulator idle for
(the floor's share of each request). The paused one is what ingest waits at 1 connection: the
emulator's threads go idle between requests and take longer to answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from google.cloud import pubsub_v1

from bench.common import PROJECT, Emulators, median, percentile, process_tree, ratio, spawn_function, wait_http
from omi_receiver.devtools import emulators, functions
from omi_receiver.runtime.ingest.publisher import DirectPublisher

TOKEN = "bench-token-0123456789"
# The publish floor (bench/publish_floor_main.py) runs at these levels only, as a third arm: at
# 1 connection ingest is counted against it. Ingest with CHUNK_ENCODING=pcm runs at every level
# of 1-second chunks, as a fourth arm: what the FLAC codec adds to a request.
PUBLISH_FLOOR_LABELS = ("c1",)
# 1 connection is the level where the throughput ratio is closest to its target; its rounds are
# short, so it gets more of them (a multiple of 3: each arm runs first, second and third alike).
C1_ROUNDS = 6
WARMUP_PUBLISHES = 30_000
WARMUP_BLOCK = 2_000
TARGETS = {
    "throughput_vs_floor_min": 0.5,  # at 10 to 200 connections
    "throughput_vs_publish_floor_min": 0.85,  # at 1 connection (PUBLISH_FLOOR_LABELS)
    "cpu_vs_floor_max": 2.0,
    "p99_vs_floor_max": 3.0,
}
# Each server measured: its source and the environment it adds.
SERVERS = {
    "ingest": ("main.py", {}),
    "floor": ("bench/floor_main.py", {}),
    "publish_floor": ("bench/publish_floor_main.py", {}),
    "ingest_pcm": ("main.py", {"CHUNK_ENCODING": "pcm"}),
}


def _load(
    port: int, server_pid: int, watch: dict, concurrency: int, body_bytes: int, seconds: float, warmup: float
) -> dict:
    args = dict(
        port=port,
        path=f"/{TOKEN}",
        concurrency=concurrency,
        uids=256,
        sample_rate=16000,
        body_bytes=body_bytes,
        warmup=warmup,
        seconds=seconds,
        watch={"server": server_pid, **watch},
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=warmup + seconds + 60,
    )
    if out.returncode:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def run(quick: bool, log=print) -> dict:
    levels = [1, 50] if quick else [1, 10, 50, 200]
    rounds = 2 if quick else 3
    seconds, warmup = (3.0, 1.0) if quick else (6.0, 1.5)
    # A legacy sender's 10-second POST (320 KB), for the cost model's legacy column.
    extra = [] if quick else [("legacy_10s", 10, 320_000)]
    with Emulators(gcs=False) as em:
        topic = "bench-ingest-chunks"
        topic_path = f"projects/{PROJECT}/topics/{topic}"
        pubsub_v1.PublisherClient().create_topic(name=topic_path)
        warmup_report = _warm_emulator(topic_path, WARMUP_PUBLISHES // (3 if quick else 1), log)
        env = {**em.env, "INGEST_TOKENS": TOKEN, "CHUNKS_TOPIC": topic}
        servers = {}
        try:
            for name, (source, extra_env) in SERVERS.items():
                port = emulators.free_port()
                proc = spawn_function(source, "receive_chunk", port, {**env, **extra_env}, em.tmp / f"{name}.log")
                servers[name] = (port, proc)
            for port, proc in servers.values():
                wait_http(f"http://127.0.0.1:{port}/")
                # The first requests import the clients and open the channel: not part of any round.
                _load(port, proc.pid, {}, 4, 32_000, 1.0, 0.5)
            watch = {"pubsub_emulator": em.pubsub.proc.pid}
            runs = []
            plan = [(f"c{c}", c, 32_000) for c in levels] + extra
            for label, concurrency, body in plan:
                arms = ["ingest", "floor", *(["publish_floor"] if label in PUBLISH_FLOOR_LABELS else [])]
                arms += ["ingest_pcm"] if label.startswith("c") else []
                n_rounds = 2 if not label.startswith("c") else C1_ROUNDS if label == "c1" and not quick else rounds
                for r in range(n_rounds):
                    # Rotate which arm goes first so drift hits them alike (A/B, B/A, ...).
                    order = arms[r % len(arms) :] + arms[: r % len(arms)]
                    for name in order:
                        port, proc = servers[name]
                        result = _load(port, proc.pid, watch, concurrency, body, seconds, warmup)
                        result.update(
                            server=name, label=label, round=r, body_bytes=body, server_pids=process_tree(proc.pid)
                        )
                        log(
                            f"  ingest {label:10} {name:13} round {r}: {result['rps']:7.1f} req/s  "
                            f"p99 {result['p99_ms']} ms  server {result['cpu_ms_per_request']['server']} CPU-ms/req"
                        )
                        runs.append(result)
            publish_rtt = {}
            for name, pause in (("back_to_back", 0.0), ("after_1ms_idle", 0.001)):
                publish_rtt[name] = _publish_round_trip(topic_path, 3000 if not quick else 1000, pause)
                log(
                    f"  publish round trip alone, {name}: p50 {publish_rtt[name]['p50_ms']} ms  "
                    f"p99 {publish_rtt[name]['p99_ms']} ms  client {publish_rtt[name]['client_cpu_ms']} CPU-ms"
                )
        finally:
            for _, proc in servers.values():
                functions.stop(proc.pid, proc=proc)
    return {
        "runs": runs,
        "summary": summarize(runs),
        "targets": TARGETS,
        "publish_rtt": publish_rtt,
        "emulator_warmup": warmup_report,
        "settings": {
            "levels": levels,
            "rounds": rounds,
            "c1_rounds": rounds if quick else C1_ROUNDS,
            "window_s": seconds,
            "warmup_s": warmup,
            "body_bytes": 32_000,
            "uids": 256,
            "server": "functions-framework (gunicorn gthread, 1 worker)",
        },
    }


def _rtt_publisher():
    """The Publish RPC ingest makes, from this process: one 32 KB chunk per call."""
    publisher = DirectPublisher()
    attributes = {
        "uid": "rtt-user",
        "sample_rate": "16000",
        "received_at": "2026-01-01T00:00:00.000000Z",
        "chunk_id": "00000000-0000-4000-8000-000000000000",
        "shard": "0",
    }
    data = bytes(32_000)
    return lambda topic: publisher.publish(topic, data, attributes=attributes, timeout=10)


def _warm_emulator(topic: str, calls: int, log) -> dict:
    """Publish `calls` chunks so the emulator's JIT settles; the first and last blocks' round trips."""
    publish, blocks, started = _rtt_publisher(), [], time.monotonic()
    for _ in range(max(1, calls // WARMUP_BLOCK)):
        latencies = []
        for _ in range(WARMUP_BLOCK):
            t = time.perf_counter()
            publish(topic)
            latencies.append((time.perf_counter() - t) * 1000)
        blocks.append({"p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2)})
    report = {
        "publishes": len(blocks) * WARMUP_BLOCK,
        "seconds": round(time.monotonic() - started, 1),
        "first_block": blocks[0],
        "last_block": blocks[-1],
    }
    log(
        f"  emulator warm-up: {report['publishes']} publishes in {report['seconds']} s; round trip p50/p99 "
        f"{blocks[0]['p50_ms']}/{blocks[0]['p99_ms']} ms first block, "
        f"{blocks[-1]['p50_ms']}/{blocks[-1]['p99_ms']} ms last"
    )
    return report


def _publish_round_trip(topic: str, calls: int, pause: float) -> dict:
    """The Publish RPC alone, one call at a time, `pause` seconds apart (0: back to back)."""
    publish = _rtt_publisher()
    for _ in range(500):  # warm-up of this process's channel
        publish(topic)
    latencies, cpu = [], 0.0
    for _ in range(calls):
        if pause:
            time.sleep(pause)
        cpu_start, started = time.process_time(), time.perf_counter()
        publish(topic)
        latencies.append((time.perf_counter() - started) * 1000)
        cpu += time.process_time() - cpu_start
    return {
        "calls": calls,
        "pause_ms": pause * 1000,
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "client_cpu_ms": round(cpu / calls * 1000, 3),
    }


def summarize(runs: list[dict]) -> dict:
    """Medians per label and server, and the ingest/floor ratios against the targets."""
    out = {}
    for label in dict.fromkeys(r["label"] for r in runs):
        row = {}
        for server in SERVERS:
            mine = [r for r in runs if r["label"] == label and r["server"] == server]
            if not mine:
                continue
            row[server] = {
                "rps": round(median([r["rps"] for r in mine]), 1),
                "p50_ms": round(median([r["p50_ms"] for r in mine]), 2),
                "p95_ms": round(median([r["p95_ms"] for r in mine]), 2),
                "p99_ms": round(median([r["p99_ms"] for r in mine]), 2),
                "cpu_ms_per_request": {
                    k: round(median([r["cpu_ms_per_request"][k] for r in mine]), 3)
                    for k in mine[0]["cpu_ms_per_request"]
                },
                "non_200": sum(n for r in mine for s, n in r["statuses"].items() if s != "200"),
                "runs": len(mine),
            }
        ing, flo = row["ingest"], row["floor"]
        row["ratios"] = {
            "throughput": ratio(ing["rps"], flo["rps"]),
            "cpu": ratio(ing["cpu_ms_per_request"]["server"], flo["cpu_ms_per_request"]["server"]),
            "p99": ratio(ing["p99_ms"], flo["p99_ms"]),
        }
        if "publish_floor" in row:
            row["ratios"]["publish_floor_throughput"] = ratio(row["publish_floor"]["rps"], flo["rps"])
            row["ratios"]["throughput_vs_publish_floor"] = ratio(ing["rps"], row["publish_floor"]["rps"])
        if "ingest_pcm" in row:
            pcm = row["ingest_pcm"]
            row["ratios"]["pcm_throughput"] = ratio(pcm["rps"], flo["rps"])
            row["ratios"]["pcm_cpu"] = ratio(pcm["cpu_ms_per_request"]["server"], flo["cpu_ms_per_request"]["server"])
            if "publish_floor" in row:
                row["ratios"]["pcm_throughput_vs_publish_floor"] = ratio(pcm["rps"], row["publish_floor"]["rps"])
        row["pass"] = {
            "throughput": row["ratios"]["throughput_vs_publish_floor"] >= TARGETS["throughput_vs_publish_floor_min"]
            if "publish_floor" in row
            else row["ratios"]["throughput"] >= TARGETS["throughput_vs_floor_min"],
            "cpu": row["ratios"]["cpu"] <= TARGETS["cpu_vs_floor_max"],
            "p99": row["ratios"]["p99"] <= TARGETS["p99_vs_floor_max"],
        }
        out[label] = row
    return out
