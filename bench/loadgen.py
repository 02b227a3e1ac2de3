"""Closed-loop HTTP load generator: C keep-alive connections, each posting one chunk after
another, like the Omi backend's one-at-a-time sends per uid.

Run as its own process (`python -m bench.loadgen '<json>'`) so its CPU is measured apart
from the server's and the bench's. Plain asyncio streams with prebuilt request bytes: a
full HTTP client library would spend more CPU than the server under test on 2 cores.

Connection i owns uids i, i+C, i+2C, ... (at least `uids` in all), so no two requests of one
uid are ever in flight together. Only requests sent and answered inside the measurement
window (after `warmup`) count; the window's edges also sample the CPU of `watch` processes.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
import uuid

from bench.common import ROOT, cpu_seconds, percentile, process_tree
from omi_receiver.devtools.simulate.wavfile import read_wav

# The body is real speech: ingest compresses it (CHUNK_ENCODING=flac), and a codec's time
# depends on what it encodes. Taken from 1 s in, repeated if the sample is shorter.
SPEECH = ROOT / "samples" / "speech-16k.wav"


def speech_body(body_bytes: int) -> bytes:
    pcm = read_wav(SPEECH)[0][32_000:]
    return (pcm * (body_bytes // len(pcm) + 1))[:body_bytes]


async def _connection(i: int, args: dict, body: bytes, state: dict) -> None:
    conns, n_uids = args["concurrency"], args["uids"]
    uids = [f"bench-u{j:04d}" for j in range(i, max(n_uids, conns), conns)]
    reader, writer = await asyncio.open_connection("127.0.0.1", args["port"])
    head = (
        f"POST {args['path']}?sample_rate={args['sample_rate']}&uid={{uid}} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{args['port']}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(body)}\r\nIdempotency-Key: {{key}}\r\n\r\n"
    )
    n = 0
    while time.monotonic() < state["end"]:
        uid = uids[n % len(uids)]
        n += 1
        sent = time.monotonic()
        writer.write(head.format(uid=uid, key=uuid.uuid4()).encode())
        writer.write(body)
        status_line = await reader.readuntil(b"\r\n")
        headers = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in headers.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await reader.readexactly(length)
        done = time.monotonic()
        status = int(status_line.split()[1])
        if sent >= state["start"] and done <= state["end"]:
            state["latencies"].append(done - sent)
            state["statuses"][status] = state["statuses"].get(status, 0) + 1
        if b"connection: close" in headers.lower():
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", args["port"])
    writer.close()


async def _edges(args: dict, state: dict, watch: dict[str, list[int]]) -> dict:
    """CPU of this process and of each watched process tree at the window's two edges."""

    def sample():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {"loadgen": usage.ru_utime + usage.ru_stime, **{k: cpu_seconds(p) for k, p in watch.items()}}

    await asyncio.sleep(state["start"] - time.monotonic())
    first = sample()
    await asyncio.sleep(state["end"] - time.monotonic())
    last = sample()
    return {k: round(last[k] - first[k], 3) for k in first}


async def main(args: dict) -> dict:
    body = speech_body(args["body_bytes"])
    watch = {name: process_tree(pid) for name, pid in args.get("watch", {}).items()}
    now = time.monotonic()
    state = {
        "start": now + args["warmup"],
        "end": now + args["warmup"] + args["seconds"],
        "latencies": [],
        "statuses": {},
    }
    edges = asyncio.create_task(_edges(args, state, watch))
    results = await asyncio.gather(
        *(_connection(i, args, body, state) for i in range(args["concurrency"])), return_exceptions=True
    )
    cpu = await edges
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    lat = state["latencies"]
    ok = state["statuses"].get(200, 0)
    return {
        "concurrency": args["concurrency"],
        "seconds": args["seconds"],
        "requests": len(lat),
        "statuses": state["statuses"],
        "connection_errors": errors[:5],
        "rps": round(ok / args["seconds"], 1),
        "p50_ms": round(percentile(lat, 50) * 1000, 2) if lat else None,
        "p95_ms": round(percentile(lat, 95) * 1000, 2) if lat else None,
        "p99_ms": round(percentile(lat, 99) * 1000, 2) if lat else None,
        "cpu_s": cpu,
        "cpu_ms_per_request": {k: round(v * 1000 / max(1, len(lat)), 3) for k, v in cpu.items()},
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
