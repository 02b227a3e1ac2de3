"""Section 2, the assembler: CPU per hour of audio, Cloud Storage requests per chunk by kind,
bytes downloaded, memory, and flush time against recording length.

Storage requests are counted twice: by `FaultProxy` (error rate 0) between the assembler and
fake-gcs-server, which sees every HTTP request and the bytes downloaded, and by the
assembler's own `store.ops`; the two must agree.
"""

from __future__ import annotations

from collections import Counter

from bench import feed, worker
from bench.common import Emulators, median, ratio
from omi_receiver.devtools.faultproxy import FaultProxy

MINUTE_US = 60_000_000
SAMPLES = 5  # flushes timed at each recording length
TARGETS = {"writes_per_chunk_max": 0.2, "audio_bytes_down": 0, "flush_ratio_max": 1.2, "invocations_per_chunk_max": 0.1}
# proxy kind -> store.ops field
CROSS_CHECK = {
    "upload": "uploads",
    "compose": "composes",
    "download": "reads",
    "delete": "deletes",
    "list": "lists",
    "patch": "patches",
}


def _passes(em: Emulators, proxy: FaultProxy, users: int, rounds: int, finalize: bool, log) -> list[dict]:
    """`rounds` ticks of one minute of 1-s chunks per user, each followed by one measured pass.

    As in production, the pass runs as the minute ends: the last SETTLE_SECONDS of chunks are
    still settling, so the pass releases them (nack) and the next pass flushes them with the
    next minute. Steady state: 60 chunks flushed and 10 released per user per tick.
    """
    config = em.config()
    env = {**em.env, "STORAGE_EMULATOR_HOST": proxy.url}
    uids = [f"asm-{users}-{i:03d}" for i in range(users)]
    out = []
    with worker.pool(env, config) as pool:
        t0 = feed.now_minute_us()
        for r in range(rounds):
            start = t0 + r * MINUTE_US
            feed.minute_of_audio(uids, config, start)
            out.append(_measured_pass(pool, proxy, start + MINUTE_US, r, users, "first" if r == 0 else "steady", log))
        if finalize:
            # No new audio; ticks go on until a pass closes the idle recording. The assembler
            # judges idleness against the previous clean drain, so this takes a few ticks.
            start = t0 + rounds * MINUTE_US
            for tick in range(1, 6):
                at = start + tick * (config.session_gap_seconds // 2) * 1_000_000
                m = _measured_pass(pool, proxy, at, rounds + tick - 1, users, "finalize", log)
                out.append(m)
                if m["out"]["finalized"]:
                    break
    return out


def _measured_pass(pool, proxy: FaultProxy, at: int, r: int, users: int, kind: str, log) -> dict:
    proxy.reset_counts()
    m = pool.submit(worker.run_pass, at).result()
    m.update(
        round=r,
        users=users,
        chunks=m["out"]["assembled"],
        held=m["out"]["held"],
        kind=kind,
        proxy_counts=dict(proxy.counts),
        bytes_down=proxy.bytes_down,
        flushes_per_user=round(len(m["flushed"]) / users, 2),
        pulls=len(m["pulls"]),
    )
    m["cross_check_ok"] = all(m["proxy_counts"].get(k, 0) == m["ops"][v] for k, v in CROSS_CHECK.items())
    del m["flushed"]
    log(
        f"  assembler {users:3d} users round {r} ({kind}): {m['chunks']} chunks, {m['held']} released, "
        f"{m['finalized'] if 'finalized' in m else m['out']['finalized']} finalized, {m['wall_s']} s wall, "
        f"{m['cpu_s']} CPU-s, {m['flushes_per_user']} flushes/user, proxy {m['proxy_counts']}"
    )
    return m


def _per_chunk(rounds: list[dict]) -> dict:
    """Median over the steady-state rounds of each request kind per chunk."""
    steady = [r for r in rounds if r["kind"] == "steady"]
    kinds = sorted({k for r in steady for k in r["proxy_counts"]})
    per = {k: median([r["proxy_counts"].get(k, 0) / r["chunks"] for r in steady]) for k in kinds}
    per["writes"] = per.get("upload", 0) + per.get("compose", 0) + per.get("patch", 0)
    return {k: round(v, 4) for k, v in per.items()}


def run(quick: bool, log=print) -> dict:
    with Emulators() as em:
        proxy = FaultProxy(em.env["STORAGE_EMULATOR_HOST"], error_rate=0).start()
        try:
            # One user: each pass pulls the user's whole minute in one pull, so one flush per
            # user per tick, as designed.
            single = _passes(em, proxy, 1, 3 if quick else 6, True, log)
            # Many users: the emulator hands out at most 100 messages per pull, spread over
            # all ordering keys, and the pass flushes per pull.
            many = _passes(em, proxy, 5 if quick else 20, 2 if quick else 3, False, log)
            idle = _idle(em, proxy, log)
        finally:
            proxy.stop()
        # Flush time against recording length: direct to fake-gcs (no proxy in the timing).
        lengths = [1, 10] if quick else [1, 10, 15, 60]
        config = em.config(max_recording_seconds=6 * 3600)  # so 60+ minutes stay one recording
        with worker.pool(em.env, config) as pool:
            series = pool.submit(
                worker.flush_series,
                "asm-long",
                max(lengths) + SAMPLES,
                60,
                16000,
                feed.now_minute_us() - 5 * 3600 * 1_000_000,
            ).result()
    summary = summarize(single, many, series, lengths)
    summary.update(idle)  # idle_pass, full_idle_pass, busy_pass_overhead
    return {
        "single": single,
        "many": many,
        "flush_series": series,
        "idle": idle,
        "summary": summary,
        "targets": TARGETS,
    }


def _idle(em: Emulators, proxy: FaultProxy, log) -> dict:
    """The idle cost of a shard, on a fresh bucket and subscription:

    idle_pass       a tick with nothing waiting and no recording open, after the pass that
                    finalized the last one: it reads the shard lease and probes the
                    subscription (one short pull), nothing more
    full_idle_pass  the same, once a day, when the sweeps are due (erase markers): a full
                    pass that finds nothing (lease read, take, state listing, release)
    busy_pass_overhead  what every pass with work pays besides its flushes: a full pass that
                    flushes nothing and sweeps nothing (lease read, take, release; the sweeps
                    wait for the time a recording could be finalized). Measured on a pass
                    whose probe finds one chunk still settling, which it hands back.

    idle_pass and full_idle_pass have wall_s, cpu_s, proxy_counts, skipped (the pass's
    Skipped reason: "idle" for the idle tick, none for the full pass) and pull_s: how long
    each of the pass's collecting pulls took (the probe is not one of them); idle_pass also
    first_probe_wall_s, the instance's first idle pass (its probe waits longer).
    busy_pass_overhead has proxy_counts only."""
    config = em.config()
    env = {**em.env, "STORAGE_EMULATOR_HOST": proxy.url}
    uid = "asm-idle"
    with worker.pool(env, config) as pool:
        t0 = feed.now_minute_us()
        feed.minute_of_audio([uid], config, t0, chunks=5)
        at = t0 + MINUTE_US
        pool.submit(worker.run_pass, at).result()  # flushes; pays for imports and channels
        for _ in range(6):  # ticks until the idle recording is finalized
            at += MINUTE_US
            if pool.submit(worker.run_pass, at).result()["out"]["finalized"]:
                break
        else:
            raise RuntimeError("the idle bench's recording was never finalized")
        at += MINUTE_US
        first = pool.submit(worker.run_pass, at).result()  # the instance's first probe waits longer
        out = {}
        for name, step in (("idle_pass", MINUTE_US), ("full_idle_pass", 24 * 60 * MINUTE_US + MINUTE_US)):
            at += step
            proxy.reset_counts()
            m = pool.submit(worker.run_pass, at).result()
            out[name] = {
                "wall_s": m["wall_s"],
                "cpu_s": m["cpu_s"],
                "proxy_counts": dict(proxy.counts),
                "pull_s": [p[1] for p in m["pulls"]],
                "skipped": m["out"]["skipped"],
            }
        at += MINUTE_US
        feed.minute_of_audio([uid], config, at - 2_000_000, chunks=1)  # received 1 s ago: settling
        proxy.reset_counts()
        busy = pool.submit(worker.run_pass, at).result()["out"]
        busy_counts = dict(proxy.counts)
    if out["idle_pass"]["skipped"] != "idle" or out["full_idle_pass"]["skipped"]:
        raise RuntimeError(f"the idle bench did not measure what it says: {out}")
    if busy["skipped"] or busy["swept"] or busy["flushes"] or busy["held"] != 1:
        raise RuntimeError(f"the busy-pass overhead bench did not measure what it says: {busy}")
    out["idle_pass"]["first_probe_wall_s"] = first["wall_s"]
    out["busy_pass_overhead"] = {"proxy_counts": busy_counts}
    for name in ("idle_pass", "full_idle_pass"):
        m = out[name]
        log(f"  assembler {name}: {m['wall_s']} s wall, {m['cpu_s']} CPU-s, proxy {m['proxy_counts']}")
    log(f"  assembler busy_pass_overhead: proxy {busy_counts}")
    return out


def summarize(single, many, series, lengths) -> dict:
    first = next(r for r in single if r["kind"] == "first")
    steady = [r for r in single if r["kind"] == "steady"]
    fin = [r for r in single if r["kind"] == "finalize"]
    downloads = sum(r["proxy_counts"].get("download", 0) for r in single + many)
    state_reads = sum(r["ops"]["reads"] for r in single + many)
    bytes_down = sum(r["bytes_down"] for r in single + many)

    def at_length(n):  # flushes made when the recording already held n minutes
        chosen = series[n : n + SAMPLES]

        def wait(f, *kinds):
            return sum(f["waits_s"].get(k, 0.0) for k in kinds)

        return {
            "minutes": n,
            "wall_s": median([f["wall_s"] for f in chosen]),
            "cpu_s": median([f["cpu_s"] for f in chosen]),
            "compose_s": round(median([wait(f, "compose") for f in chosen]), 3),
            "delete_s": round(median([wait(f, "delete_quietly") for f in chosen]), 3),
            "other_requests_s": round(median([wait(f, "read_state", "write_state", "upload") for f in chosen]), 3),
            # Compose and delete are the requests whose cost grows with the object in
            # fake-gcs-server (it copies / frees the bytes); the rest is the assembler's part.
            "wall_without_compose_delete_s": round(
                median([f["wall_s"] - wait(f, "compose", "delete_quietly") for f in chosen]), 3
            ),
            "requests": median([sum(f["ops"].values()) for f in chosen]),
        }

    flush = [at_length(n) for n in lengths]
    base, last = flush[0], flush[-1]
    per_chunk_single = _per_chunk(single)
    per_chunk_many = _per_chunk(many)
    steady_many = [r for r in many if r["kind"] == "steady"]
    return {
        "per_chunk_single_user": per_chunk_single,
        "per_chunk_many_users": per_chunk_many,
        "users_many": many[0]["users"],
        "flushes_per_user_per_pass_many": round(median([r["flushes_per_user"] for r in steady_many]), 1),
        "flushes_per_user_single": median([r["flushes_per_user"] for r in steady]),
        "requests_first_flush": first["proxy_counts"],
        "requests_steady_pass": steady[-1]["proxy_counts"],
        # The ticks after the last audio, up to the one that finalized: summed, and how many.
        "requests_finalize_pass": dict(sum((Counter(r["proxy_counts"]) for r in fin), Counter())),
        "finalize_passes": len(fin),
        "finalized": sum(r["out"]["finalized"] for r in fin),
        "cross_check_ok": all(r["cross_check_ok"] for r in single + many),
        "downloads": downloads,
        "state_reads": state_reads,
        "bytes_down": bytes_down,
        "audio_bytes_down": bytes_down if downloads != state_reads else 0,
        "state_object_bytes": round(bytes_down / downloads) if downloads else 0,
        "released_per_chunk": round(median([r["held"] / r["chunks"] for r in steady]), 4),
        "chunks_first_pass": first["chunks"],
        "chunks_steady_pass": median([r["chunks"] for r in steady]),
        "chunks_finalize_pass": sum(r["chunks"] for r in fin),
        "cpu_s_per_audio_hour_single": round(median([r["cpu_s"] for r in steady]) * 60, 2),
        "cpu_s_per_audio_hour_many": round(median([r["cpu_s"] / r["users"] for r in steady_many]) * 60, 2),
        "pass_wall_s_single": median([r["wall_s"] for r in steady]),
        "pass_cpu_s_single": median([r["cpu_s"] for r in steady]),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in single + many),
        "rss_before_first_pass_mib": min(r["rss_before_mib"] for r in single + many),
        "flush_time": flush,
        "flush_ratio_wall": ratio(last["wall_s"], base["wall_s"]),
        "flush_ratio_wall_without_compose_delete": ratio(
            last["wall_without_compose_delete_s"], base["wall_without_compose_delete_s"]
        ),
        "flush_ratio_cpu": ratio(last["cpu_s"], base["cpu_s"]),
        "invocations_per_chunk_single": round(1 / 60, 4),
        "pass": {
            "writes_single": per_chunk_single["writes"] <= TARGETS["writes_per_chunk_max"],
            "writes_many": per_chunk_many["writes"] <= TARGETS["writes_per_chunk_max"],
            "audio_bytes_down": downloads == state_reads,
            "flush_ratio_assembler": ratio(last["wall_without_compose_delete_s"], base["wall_without_compose_delete_s"])
            <= TARGETS["flush_ratio_max"],
            "flush_ratio_cpu": ratio(last["cpu_s"], base["cpu_s"]) <= TARGETS["flush_ratio_max"],
            "invocations": 1 / 60 <= TARGETS["invocations_per_chunk_max"],
        },
    }
