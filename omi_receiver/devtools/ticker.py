"""Local stand-in for Cloud Scheduler: a tick every TICK_SECONDS to the assembler.

In production Cloud Scheduler publishes to the ticks topic and Eventarc delivers a
CloudEvent to `assemble_recordings`. Here the loop POSTs the same kind of CloudEvent
to the assembler served by functions-framework, waiting for each pass to finish, so
passes never overlap (as with one scheduler job and max one instance per tick).

    python -m omi_receiver.devtools.ticker --url http://127.0.0.1:8081 [--interval 5] [--shards 1]

The defaults come from TICK_SECONDS (omi_receiver.devtools.settings) and ASSEMBLER_SHARDS
(the functions' Config); `make up` passes both.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import threading
import time
import uuid

import requests

from omi_receiver.devtools.settings import LocalSettings
from omi_receiver.runtime import logs
from omi_receiver.runtime.config import Config, ConfigError
from omi_receiver.runtime.contract import format_time, now_us


def tick_event(topic: str, shard: int = 0, shards: int = 1) -> tuple[dict[str, str], bytes]:
    """A binary-mode CloudEvent as Eventarc sends for a Cloud Scheduler message."""
    headers = {
        "ce-id": uuid.uuid4().hex,
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": f"//pubsub.googleapis.com/{topic}",
        "ce-time": format_time(now_us()),
        "Content-Type": "application/json",
    }
    data = json.dumps({"shard": shard, "shards": shards}).encode()
    body = {
        "message": {
            "data": base64.b64encode(data).decode(),
            "messageId": headers["ce-id"],
            "publishTime": headers["ce-time"],
        },
        "subscription": "local-ticker",
    }
    return headers, json.dumps(body).encode()


def run(url: str, interval: float, topic: str, stop: threading.Event, shards: int = 1) -> None:
    session = requests.Session()
    while not stop.is_set():
        started = time.monotonic()
        for shard in range(shards):  # one pass per shard, as one scheduler job per shard
            headers, body = tick_event(topic, shard, shards)
            try:
                response = session.post(url, data=body, headers=headers, timeout=600)
                if response.status_code >= 300:
                    logs.error("tick_failed", status=response.status_code, body=response.text[:200])
            except requests.RequestException as exc:
                logs.error("tick_failed", error=str(exc))
        stop.wait(max(0.0, interval - (time.monotonic() - started)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Tick the local assembler every few seconds.")
    parser.add_argument("--url", required=True, help="assembler function URL")
    parser.add_argument("--interval", type=float, help="seconds between ticks (default: TICK_SECONDS, 5)")
    parser.add_argument("--topic", default="projects/local/topics/assembler-ticks")
    parser.add_argument("--shards", type=int, help="passes per tick (default: ASSEMBLER_SHARDS, 1)")
    args = parser.parse_args(argv)
    try:
        interval = LocalSettings.from_env().tick_seconds if args.interval is None else args.interval
        shards = Config.from_env().assembler_shards if args.shards is None else args.shards
    except ConfigError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(args.url, interval, args.topic, stop, shards)


if __name__ == "__main__":
    main()
