"""Section 4, scale: how many users streaming 1-s chunks one assembler pass keeps up with at
the production tick (a minute of chunks per user per pass, PASS_SECONDS=45), and whether two
passes side by side on one subscription split the work.

Two views of a pass:
  end-to-end  chunks published to Pub/Sub, then one real `run_pass` (pulls, flushes, acks);
  flush stage one 60-chunk `flush_user` per user, FLUSH_WORKERS at a time, no Pub/Sub: the
              pass as designed, when every user's minute arrives in one pull.
"""

from __future__ import annotations

import time
from collections import Counter

from bench import feed, worker
from bench.common import Emulators, median
from omi_receiver.runtime.config import Config

MINUTE_US = 60_000_000
PASS_SECONDS = Config.pass_seconds


def _end_to_end(em: Emulators, users: int, passes: int, log, shards: int = 1) -> dict:
    """Publish a minute for `users`, then run `passes` passes side by side: all on one
    subscription (shards=1), or pass i on shard i (shards=passes)."""
    config = em.config(assembler_shards=shards)
    uids = [f"scale-{users}-{i:04d}" for i in range(users)]
    start = feed.now_minute_us() - 2 * MINUTE_US
    pools = [worker.pool(em.env, config) for _ in range(passes)]
    try:
        for i, pool in enumerate(pools):  # an empty pass first: process start, imports, channels
            pool.submit(worker.run_pass, None, i % shards).result()
        t = time.monotonic()
        feed.minute_of_audio(uids, config, start)
        publish_s = round(time.monotonic() - t, 2)
        at = start + MINUTE_US + 15_000_000  # every chunk settled
        futures = [pool.submit(worker.run_pass, at, i % shards) for i, pool in enumerate(pools)]
        results = [f.result() for f in futures]
    finally:
        for pool in pools:
            pool.shutdown()
    flushed_by = Counter()
    for r in results:
        for uid in set(r["flushed"]):
            flushed_by[uid] += 1
    assembled = sum(r["out"]["assembled"] for r in results)
    wall = max(r["wall_s"] for r in results)
    row = {
        "users": users,
        "passes": passes,
        "shards": shards,
        "chunks": 60 * users,
        "publish_s": publish_s,
        "wall_s": wall,
        "cpu_s": round(sum(r["cpu_s"] for r in results), 3),
        "assembled": assembled,
        "finished": assembled == 60 * users,
        "flushes": sum(len(r["flushed"]) for r in results),
        "retried": sum(r["out"]["retried"] for r in results),
        "chunks_per_s": round(assembled / wall, 1),
        "cpu_ms_per_user_minute": round(sum(r["cpu_s"] for r in results) * 1000 / users, 2),
        "per_pass": [
            {
                "wall_s": r["wall_s"],
                "cpu_s": r["cpu_s"],
                "assembled": r["out"]["assembled"],
                "uids_flushed": len(set(r["flushed"])),
                "flushes": len(r["flushed"]),
                "pulls": len(r["pulls"]),
                "peak_rss_mib": r["peak_rss_mib"],
                "rss_before_mib": r["rss_before_mib"],
                "collects": r["collects"],
                "empty_collects": r["empty_collects"],
            }
            for r in results
        ],
        "uids_flushed_by_more_than_one_pass": sum(1 for n in flushed_by.values() if n > 1),
        "uids_flushed": len(flushed_by),
    }
    log(
        f"  scale end-to-end {users:4d} users x {passes} pass(es), {shards} shard(s): {wall} s wall, "
        f"{row['cpu_s']} CPU-s, "
        f"{assembled}/{60 * users} chunks, {row['flushes']} flushes, "
        f"{row['uids_flushed_by_more_than_one_pass']} uids in >1 pass"
    )
    return row


def _flush_stage(em: Emulators, users: int, log) -> dict:
    config = em.config()
    uids = [f"stage-{users}-{i:04d}" for i in range(users)]
    start = feed.now_minute_us() - 10 * MINUTE_US
    with worker.pool(em.env, config) as pool:
        first = pool.submit(worker.flush_round, uids, 60, 16000, start, config.flush_workers).result()
        m = pool.submit(worker.flush_round, uids, 60, 16000, start + MINUTE_US, config.flush_workers).result()
    row = {
        "users": users,
        "workers": config.flush_workers,
        "wall_s": m["wall_s"],
        "cpu_s": m["cpu_s"],
        "first_round_wall_s": first["wall_s"],
        "ops": m["ops"],
        "cpu_ms_per_user_minute": round(m["cpu_s"] * 1000 / users, 2),
        "wall_ms_per_user": round(m["wall_s"] * 1000 / users, 2),
        "peak_rss_mib": m["peak_rss_mib"],
    }
    log(
        f"  scale flush stage {users:4d} users: {m['wall_s']} s wall, {m['cpu_s']} CPU-s "
        f"({row['cpu_ms_per_user_minute']} CPU-ms per user-minute)"
    )
    return row


def run(quick: bool, log=print) -> dict:
    levels = [10, 30] if quick else [10, 50, 100, 200, 400]
    side_by_side = 30 if quick else 200
    with Emulators() as em:
        one = [_end_to_end(em, n, 1, log) for n in levels]
        # Two passes on one subscription (what the brief asked), and two shards (how the
        # design runs parallel passes: a subscription each, users split by crc32(uid)).
        same_sub = _end_to_end(em, side_by_side, 2, log, shards=1)
        sharded = _end_to_end(em, side_by_side, 2, log, shards=2)
        one_same = next(r for r in one if r["users"] == side_by_side)
        stage = [_flush_stage(em, n, log) for n in levels]
    side = {"one_pass": one_same, "two_passes_one_subscription": same_sub, "two_shards": sharded}
    return {"end_to_end": one, "side_by_side": side, "flush_stage": stage, "summary": summarize(one, side, stage)}


def summarize(one, side, stage) -> dict:
    kept = [r["users"] for r in one if r["finished"] and r["wall_s"] <= PASS_SECONDS]
    done = [r for r in one if r["finished"]]
    biggest = max(done or one, key=lambda r: r["users"])
    top = max(stage, key=lambda r: r["users"])
    base = side["one_pass"]
    out = {
        "pass_seconds": PASS_SECONDS,
        "largest_level_kept_up": max(kept) if kept else 0,
        # Users a pass could take in PASS_SECONDS at the measured per-user wall time.
        "end_to_end_users_per_pass_estimate": int(PASS_SECONDS / (biggest["wall_s"] / biggest["users"])),
        "end_to_end_cpu_ms_per_user_minute": biggest["cpu_ms_per_user_minute"],
        "end_to_end_level_used": biggest["users"],
        "flush_stage_users_per_pass_estimate": int(PASS_SECONDS / (top["wall_s"] / top["users"])),
        "flush_stage_cpu_ms_per_user_minute": median([r["cpu_ms_per_user_minute"] for r in stage]),
    }
    # Memory per MiB of audio a pass holds, from the largest pass: what sizes MAX_PASS_BYTES.
    big = max(one, key=lambda r: r["users"])["per_pass"][0]
    held_mib = min(max(one, key=lambda r: r["users"])["users"] * 60 * 32_000, Config.max_pass_bytes) / 2**20
    out["rss_base_mib"] = big["rss_before_mib"]
    out["rss_mib_per_audio_mib"] = round((big["peak_rss_mib"] - big["rss_before_mib"]) / held_mib, 2)
    for name in ("two_passes_one_subscription", "two_shards"):
        r = side[name]
        out[name] = {
            "throughput_ratio": round(r["chunks_per_s"] / base["chunks_per_s"], 2),
            "wall_ratio": round(r["wall_s"] / base["wall_s"], 2),
            "uids_in_both": r["uids_flushed_by_more_than_one_pass"],
            "retried": r["retried"],
            "split_ok": r["uids_flushed_by_more_than_one_pass"] == 0 and r["finished"],
        }
    return out
