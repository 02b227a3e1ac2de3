"""Section 3, freshness: time from ingest's 200 to the chunk being readable in its WAV, on a
private local stack: emulators, ingest under functions-framework, an assembler pass every
TICK seconds (TICK_SECONDS and SETTLE_SECONDS as omi_receiver.devtools.stack sets them), and senders
posting one 1-s chunk per second per uid, as a current Omi sender with interval 1 does.

The assembler runs in a bench worker process (the same `Assembler.run_pass` the function
calls, one pass at a time like omi_receiver.devtools.ticker), so it gets the deadlock work-around
of bench/worker.py. A poller lists each user's recordings every 0.1 s; chunk k of a uid
is readable once its WAV holds 44 + (k + 1) * 32,000 bytes.
"""

from __future__ import annotations

import threading
import time

import requests

from bench import worker
from bench.common import Emulators, median, percentile, spawn_function, wait_http
from omi_receiver.devtools import emulators
from omi_receiver.devtools.stack import LOCAL_DEFAULTS
from omi_receiver.runtime import clients
from omi_receiver.runtime.assembler.recording import RECORDINGS_PREFIX

# The local stack's settings, so this measures what `make up` runs.
TICK_SECONDS = float(LOCAL_DEFAULTS["TICK_SECONDS"])
SETTLE_SECONDS = float(LOCAL_DEFAULTS["SETTLE_SECONDS"])
RATE = 16000
CHUNK = RATE * 2


def run(quick: bool, log=print) -> dict:
    users, seconds = (3, 15) if quick else (6, 60)
    with Emulators() as em:
        config = em.config(settle_seconds=SETTLE_SECONDS)
        port = emulators.free_port()
        ingest = spawn_function(
            "main.py",
            "receive_chunk",
            port,
            {
                **em.env,
                "INGEST_TOKENS": config.ingest_tokens,
                "CHUNKS_TOPIC": config.chunks_topic,
            },
            em.tmp / "ingest.log",
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/")
            url = f"http://127.0.0.1:{port}/{config.ingest_tokens}"
            result = _measure(config, url, users, seconds, log)
        finally:
            emulators.stop_process_group(ingest.pid)
    return result


def _measure(config, url: str, users: int, seconds: int, log) -> dict:
    uids = [f"fresh-{i:02d}" for i in range(users)]
    acked: dict[tuple[str, int], float] = {}
    readable: dict[tuple[str, int], float] = {}
    stop = threading.Event()
    passes: list[dict] = []

    def sender(uid: str) -> None:
        session, body = requests.Session(), bytes(CHUNK)
        start = time.monotonic()
        for k in range(seconds):
            time.sleep(max(0.0, start + k + 1 - time.monotonic()))  # a second of audio, then send
            r = session.post(
                url,
                params={"sample_rate": RATE, "uid": uid},
                data=body,
                timeout=15,
                headers={"Content-Type": "application/octet-stream"},
            )
            if r.status_code == 200:
                acked[(uid, k)] = time.monotonic()

    def poller() -> None:
        bucket = clients.storage_client().bucket(config.recordings_bucket)
        seen = {uid: 0 for uid in uids}
        while not stop.is_set():
            now = time.monotonic()
            for uid in uids:
                sizes = [b.size for b in bucket.list_blobs(prefix=f"{RECORDINGS_PREFIX}{uid}/")]
                count = (max(sizes) - 44) // CHUNK if sizes else 0
                for k in range(seen[uid], count):
                    readable[(uid, k)] = now
                seen[uid] = max(seen[uid], count)
            stop.wait(0.1)

    with worker.pool({}, config) as pool:
        pool.submit(int).result()
        threads = [threading.Thread(target=sender, args=(u,)) for u in uids]
        threads.append(threading.Thread(target=poller))
        for t in threads:
            t.start()
        # Tick until every acknowledged chunk is readable (bounded: settle + two ticks after the end).
        deadline = time.monotonic() + seconds + SETTLE_SECONDS + 3 * TICK_SECONDS + 30
        while time.monotonic() < deadline:
            started = time.monotonic()
            m = pool.submit(worker.run_pass).result()
            passes.append(
                {
                    "wall_s": m["wall_s"],
                    "cpu_s": m["cpu_s"],
                    "assembled": m["out"]["assembled"],
                    "held": m["out"]["held"],
                    "pulls": len(m["pulls"]),
                    "collects": m["collects"],
                    "empty_collects": m["empty_collects"],
                }
            )
            if not any(t.is_alive() for t in threads[:-1]) and set(acked) <= set(readable):
                break
            time.sleep(max(0.0, TICK_SECONDS - (time.monotonic() - started)))
        stop.set()
        for t in threads:
            t.join(timeout=30)
    lags = sorted(readable[key] - acked[key] for key in acked if key in readable)
    missing = len([key for key in acked if key not in readable])
    log(
        f"  freshness: {len(lags)} chunks, p50 {percentile(lags, 50):.2f} s, p99 {percentile(lags, 99):.2f} s, "
        f"{missing} not readable, {len(passes)} passes"
    )
    return {
        "settings": {
            "users": users,
            "seconds": seconds,
            "tick_s": TICK_SECONDS,
            "settle_s": SETTLE_SECONDS,
            "poll_s": 0.1,
        },
        "samples_s": [round(x, 3) for x in lags],
        "passes": passes,
        "summary": {
            "chunks": len(lags),
            "not_readable": missing,
            "p50_s": round(percentile(lags, 50), 2),
            "p99_s": round(percentile(lags, 99), 2),
            "max_s": round(lags[-1], 2),
            "min_s": round(lags[0], 2),
            "pass_wall_s_median": median([p["wall_s"] for p in passes]),
            "pass_wall_s_max": max(p["wall_s"] for p in passes),
        },
    }
