"""Section 5, cost: dollars per user-hour from the measured counts (bench/results/*.json) at
the list prices of docs/prices.md, for this design at each `deployment_size` and for naive
designs; the idle cost per month; one heavy user's first year with the bucket
(bench/bucket.py); and the assembler settings for a number of users. Writes docs/cost.md.
"""

from __future__ import annotations

import math
import statistics

from bench import bucket
from bench.common import read_result
from omi_receiver.runtime.wav import HEADER_BYTES

# USD list prices, us-central1, late 2026: the rows of docs/prices.md that name these keys
# (tests/unit/test_docs.py checks the two agree). Verify before quoting; change both together.
PRICE = {
    "class_a": 0.005 / 1000,  # upload, compose, copy, list, rewrite
    "class_b": 0.0004 / 1000,  # get, metadata read
    "gb_month": 0.020,  # Standard storage
    "pubsub_tib": 40.0,  # publish and each subscription's delivery; min 1 KB per request
    "invocation": 0.40 / 1e6,  # Cloud Functions 2nd gen requests
    "vcpu_s": 0.000024,  # Cloud Run CPU, request-based billing
    "gib_s": 0.0000025,  # Cloud Run memory
    "scheduler_job": 0.10,  # per job per month; 3 jobs free per billing account
    "nearline_gb_month": 0.010,
    "coldline_gb_month": 0.004,
    "archive_gb_month": 0.0012,
    "class_a_nearline": 0.01 / 1000,  # a lifecycle SetStorageClass to Nearline
    "class_a_coldline": 0.02 / 1000,
    "class_a_archive": 0.05 / 1000,
    "autoclass_object_month": 0.0025 / 1000,  # per object of 128 KiB or more
}
# What infra/sizing.tf's `deployment_size` sets (tests/infra/test_sizes.py checks that the
# two agree): vCPU and memory (GiB) of each function. The fleet's assembler memory and shard
# count are also what `plan(10_000)` derives from the measurements.
SIZES = {
    "personal": {"ingest": (0.167, 0.25), "assembler": (0.333, 0.5)},
    "team": {"ingest": (1.0, 0.5), "assembler": (1.0, 1.0)},
    "fleet": {"ingest": (1.0, 0.5), "assembler": (1.0, 1.0)},
}
# The sizes the tables use: one person streams on a personal deployment, 10,000 users on a fleet.
SIZE_FOR_USERS = {1: "personal", 10_000: "fleet"}
# Cloud Run adds instances at ~60 % CPU, so under steady load the billed instance time is
# about the CPU time / 0.6. At 1 user there is no overlap: each burst of requests is its own
# billed period, rounded up to 100 ms.
UTILIZATION = 0.6
GRANULE_S = 0.1
ATTRIBUTE_BYTES = 200  # uid, sample_rate, received_at, chunk_id, ordering key
TIB = 2**40
HOURS_PER_MONTH = 730
TICKS_PER_MONTH = 43_200  # one a minute, 30 days
STREAM_HOURS_PER_MONTH = 16 * 30  # "a user streaming 16 hours a day" (docs/prices.md example)
# Production Cloud Storage request latency assumed for sizing (the emulator answers in ~1 ms).
GCS_REQUEST_S = 0.05
# infra/functions.tf refuses max_pass_bytes above this share of assembler_memory.
MAX_PASS_SHARE_OF_MEMORY = 0.5

SENDERS = {
    # name: (requests per hour, body bytes, bursts per hour, requests per burst, chunks per flush)
    "current X=1": (3600, 32_000, 3600, 1, 60),
    "current X=10": (3600, 32_000, 360, 10, 60),
    "legacy X=10": (360, 320_000, 360, 1, 6),
}


def _load() -> dict:
    results = {name: read_result(name) for name in ("ingest", "assembler", "scale")}
    missing = [n for n, r in results.items() if r is None]
    if missing:
        raise SystemExit(f"cost model needs bench results for: {', '.join(missing)} (run the bench first)")
    return results


def _ceil_granule(seconds: float) -> float:
    return math.ceil(seconds / GRANULE_S - 1e-9) * GRANULE_S


def counts(d: dict) -> str:
    """Request counts by kind, as the docs quote them: "compose 2, upload 3"."""
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def _ops_kinds(by_kind: dict) -> tuple[float, float]:
    """(Class A, Class B) requests in a proxy count; deletes are free."""
    a = sum(by_kind.get(k, 0) for k in ("upload", "compose", "list", "patch"))
    b = sum(by_kind.get(k, 0) for k in ("download", "metadata"))
    return a, b


def codec_cpu_per_user_hour(flac_ms: float, pcm_ms: float) -> float:
    """Dollars per user-hour of the ingest CPU the FLAC codec adds (server CPU-ms per request with
    CHUNK_ENCODING=flac and =pcm) on a busy instance: 3,600 one-second POSTs an hour."""
    return 3600 * (flac_ms - pcm_ms) / 1000 / UTILIZATION * PRICE["vcpu_s"]


def plan(users: int, asm: dict, scale: dict) -> dict:
    """Assembler settings for `users`, from measured whole passes: CPU per user-minute bounds the
    users of a pass, and so does memory: a pass assembles at most about MAX_PASS_BYTES of audio
    per tick (it leaves the rest to the next), and MAX_PASS_BYTES must fit the instance."""
    cpu_ms = scale["end_to_end_cpu_ms_per_user_minute"]  # pull, decode, flush, ack: per user per tick
    budget_s = 0.5 * scale["pass_seconds"]  # finish in half of PASS_SECONDS
    cpu_users = int(budget_s * 1000 / cpu_ms)  # a pass uses about one core (GIL)
    user_minute = 60 * 32_000
    options = []
    for gib in (1, 2):
        # MAX_PASS_BYTES that keeps the measured peak RSS within 80 % of the instance's memory,
        # and that Terraform accepts (infra/functions.tf: at most half of assembler_memory).
        by_rss = int((gib * 1024 * 0.8 - scale["rss_base_mib"]) / scale["rss_mib_per_audio_mib"]) // 64 * 64
        max_pass_mib = min(by_rss, int(gib * 1024 * MAX_PASS_SHARE_OF_MEMORY))
        per_pass = max(1, min(cpu_users, max_pass_mib * 2**20 // user_minute))
        shards = math.ceil(users / per_pass)
        options.append(
            {"memory_gib": gib, "max_pass_bytes_mib": max_pass_mib, "users_per_pass": per_pass, "shards": shards}
        )
    best = min(options, key=lambda o: (o["shards"], o["memory_gib"]))
    requests_per_flush = 10
    # Enough flushes in flight that production request latency does not become the limit.
    workers = max(
        16, 2 ** math.ceil(math.log2(max(1, best["users_per_pass"] * requests_per_flush * GCS_REQUEST_S / budget_s)))
    )
    return {
        "users": users,
        "cpu_ms_per_user_minute": cpu_ms,
        "cpu_users_per_pass": cpu_users,
        "options": options,
        **best,
        "flush_workers": workers,
        "max_instances": best["shards"] + 1,
    }


def _flac_ratio(r: dict) -> float:
    """Bytes published per byte of PCM with CHUNK_ENCODING=flac, on speech (bench/codec.py)."""
    return r["codec"]["16000"]["speech"]["bytes_ratio"]


def _burst_s(r: dict, sender: str, vcpu: float, encoding: str) -> float:
    """Wall time of one burst of POSTs at `vcpu` (concurrency 1): for 1-second POSTs, measured
    under a CPU quota (bench/fractional_cpu.py): one POST at the 1-s cadence (p50), or back to
    back (the mean, throttling pauses included: a burst's CPU outruns the quota); for the legacy
    10-second POST, the 1-vCPU latency at 10 connections (an upper bound) plus its server CPU
    stretched by the quota."""
    per_burst = SENDERS[sender][3]
    ing = r["ingest"]["summary"]
    if SENDERS[sender][1] > 32_000:
        level = ing["legacy_10s"]["ingest"]
        return per_burst * (level["p50_ms"] + level["cpu_ms_per_request"]["server"] * (1 / vcpu - 1)) / 1000
    rows = r["fractional_cpu"]["encodings"][encoding]
    row = rows[min(rows, key=lambda q: abs(float(q) - vcpu))]
    if per_burst == 1:
        return row["cadence"]["p50_ms"] / 1000
    return per_burst * statistics.mean(row["back_to_back"]["latencies_ms"]) / 1000


def per_user_hour(
    sender: str, users: int, r: dict, design: str = "this", size: str | None = None, encoding: str = "flac"
) -> dict:
    """Dollars per user-hour, by item, at a `deployment_size` (default: SIZE_FOR_USERS)."""
    ing, asm, scale = r["ingest"]["summary"], r["assembler"]["summary"], r["scale"]["summary"]
    requests, body, bursts, per_burst, chunks_per_flush = SENDERS[sender]
    size = size or SIZE_FOR_USERS[users]
    ingest_vcpu, ingest_gib = SIZES[size]["ingest"]
    legacy = body > 32_000 and "legacy_10s" in ing
    level = ing["legacy_10s"] if legacy else ing.get("c50") or ing[max(ing, key=lambda k: ing[k]["ingest"]["rps"])]
    cpu_req_s = level["ingest"]["cpu_ms_per_request"]["server"] / 1000
    cost = {}
    cost["ingest requests"] = requests * PRICE["invocation"]
    if users == 1:
        billed = bursts * _ceil_granule(_burst_s(r, sender, ingest_vcpu, encoding))
    else:
        billed = requests * cpu_req_s / UTILIZATION
    cost["ingest CPU + memory"] = billed * (ingest_vcpu * PRICE["vcpu_s"] + ingest_gib * PRICE["gib_s"])

    p = plan(users, asm, scale)
    if design == "this" or design.startswith("rewrite per minute"):
        ratio = _flac_ratio(r) if encoding == "flac" and design == "this" else 1.0
        message = max(1000, body * ratio + ATTRIBUTE_BYTES)
        # Chunks still settling when a pass runs are released and delivered again: measured share.
        released = asm["released_per_chunk"]
        cost["Pub/Sub (publish + delivery)"] = requests * (2 + released) * message / TIB * PRICE["pubsub_tib"]
        ticks = 60 * p["shards"]
        cost["assembler invocations"] = ticks / users * PRICE["invocation"]
        if users == 1:
            vcpu, gib = SIZES[size]["assembler"]
            # A pass's CPU stretches at a fractional vCPU; its waits do not.
            wall = asm["pass_wall_s_single"] + asm["pass_cpu_s_single"] * (1 / vcpu - 1)
            assembler_s = 60 * _ceil_granule(wall)
        else:
            vcpu, gib = 1.0, p["memory_gib"]
            assembler_s = 60 * p["cpu_ms_per_user_minute"] / 1000 / UTILIZATION
        cost["assembler CPU + memory"] = assembler_s * (vcpu * PRICE["vcpu_s"] + gib * PRICE["gib_s"])

    if design == "this":
        # A recording-hour: the first flush, 59 more and the finalizing ticks, each pass less
        # what a pass with nothing to flush does too (the shard lease): that per-pass overhead
        # is paid once per shard per tick, shared by the users. One user's passes list no state
        # object while the recording is open; with many users one of them is always coming due,
        # so every tick sweeps (a list page per 1,000 users).
        idle = asm["busy_pass_overhead" if users == 1 else "full_idle_pass"]["proxy_counts"]

        def user_part(by_kind):
            return {k: by_kind.get(k, 0) - idle.get(k, 0) for k in set(by_kind) | set(idle)}

        # The ticks after the last audio (the settled tail, a pass that finds nothing, the
        # sweeps that finalize) are the recording's, less what an idle shard pays anyway.
        probe = asm["idle_pass"]["proxy_counts"]
        finalize = {
            k: asm["requests_finalize_pass"].get(k, 0) - asm["finalize_passes"] * probe.get(k, 0)
            for k in set(asm["requests_finalize_pass"]) | set(probe)
        }
        parts = [user_part(asm["requests_first_flush"]), finalize]
        steady = user_part(asm["requests_steady_pass"])
        class_a = sum(_ops_kinds(c)[0] for c in parts) + 59 * _ops_kinds(steady)[0]
        class_b = sum(_ops_kinds(c)[1] for c in parts) + 59 * _ops_kinds(steady)[1]
        pages = math.ceil(users / 1000)
        over_a = idle.get("list", 0) * pages + _ops_kinds(idle)[0] - idle.get("list", 0)
        over_b = _ops_kinds(idle)[1]
        per_user = 60 * p["shards"] / users
        cost["storage Class A (flush writes)"] = class_a * PRICE["class_a"]
        cost["storage Class B (state reads)"] = class_b * PRICE["class_b"]
        cost["storage, per-pass requests (" + counts(idle) + ")"] = per_user * (
            over_a * PRICE["class_a"] + over_b * PRICE["class_b"]
        )
    else:
        n = 60 if design.startswith("rewrite per minute") else requests
        size_bytes = 115.2e6 / n  # bytes added per write
        cost["storage Class A (writes)"] = n * PRICE["class_a"]
        if design.startswith("rewrite"):
            moved = size_bytes * n * (n + 1) / 2  # each write re-uploads the whole file
            cost["storage Class B (read back the file)"] = n * PRICE["class_b"]
            # CPU to move the bytes both ways, at the rate the assembler uploads a part
            # (a 1.92 MB part inside one flush's CPU: an upper bound of CPU per byte).
            rate = 1.92e6 / asm["flush_time"][0]["cpu_s"]
            cost["CPU to move the file (estimate)"] = 2 * moved / rate * PRICE["vcpu_s"] / UTILIZATION
            if design.endswith("soft delete"):
                # Overwritten copies billed like live bytes for 7 days.
                cost["soft-deleted copies (7 days)"] = (moved - 115.2e6) / 1e9 * 7 / 30 * PRICE["gb_month"]
    return cost


def idle_month(shards: int, asm: dict, size: str) -> dict:
    """A month with nobody streaming: every tick's pass finds nothing (a lease read and one
    short pull), and once a day per shard a full pass sweeps (erase markers)."""
    vcpu, gib = SIZES[size]["assembler"]
    rate = vcpu * PRICE["vcpu_s"] + gib * PRICE["gib_s"]
    idle, daily = asm["idle_pass"], asm["full_idle_pass"]
    ticks = TICKS_PER_MONTH * shards
    sweeps = 30 * shards

    def instance_s(m: dict) -> float:
        return _ceil_granule(m["wall_s"] + m["cpu_s"] * (1 / vcpu - 1))

    def requests(by_kind: dict) -> float:
        a, b = _ops_kinds(by_kind)
        return a * PRICE["class_a"] + b * PRICE["class_b"]

    def kinds(d: dict) -> str:
        return counts(d) or "none"

    return {
        f"Cloud Scheduler ({shards} job{'s' if shards > 1 else ''}; 3 free per billing account)": shards
        * PRICE["scheduler_job"],
        "tick messages (1 KB min, publish + Eventarc delivery)": 2 * ticks * 1000 / TIB * PRICE["pubsub_tib"],
        "assembler invocations": ticks * PRICE["invocation"],
        "idle pass instance time (measured, stretched to the size's vCPU)": (ticks - sweeps) * instance_s(idle) * rate,
        f"storage requests of an idle pass ({kinds(idle['proxy_counts'])})": (ticks - sweeps)
        * requests(idle["proxy_counts"]),
        "daily sweep pass instance time": sweeps * instance_s(daily) * rate,
        f"storage requests of a daily sweep pass ({kinds(daily['proxy_counts'])})": sweeps
        * requests(daily["proxy_counts"]),
    }


HEAVY_HOURS_PER_DAY = 16
# A recording is closed after MAX_RECORDING_SECONDS (1 h by default): a heavy day is 16 objects.
HEAVY_OBJECTS_PER_DAY = 16


def heavy_user(r: dict, per_hour: float, docs_example_per_hour: float) -> dict:
    """One user streaming 16 h a day: the pipeline and the bucket, first year and steady months,
    for each storage policy and stored format; and the docs example's design (an object per
    1-second POST, which Autoclass cannot tier: objects under 128 KiB stay Standard)."""
    pcm_hour = 115.2e6
    compaction = r.get("compaction", {}).get("summary", {})
    formats = {"WAV": (pcm_hour, 0.0)}
    for name in ("flac", "opus"):
        if name in compaction:
            c = compaction[name]
            formats[f"compacted to {name.upper()}"] = (c["bytes_per_audio_hour"], _compaction_per_hour(c))
    hours_year = HEAVY_HOURS_PER_DAY * 365
    rows = {}
    for fmt, (bytes_per_hour, compact_per_hour) in formats.items():
        usage = bucket.Usage(HEAVY_HOURS_PER_DAY, bytes_per_hour, HEAVY_OBJECTS_PER_DAY)
        for policy in ("standard", "autoclass", "lifecycle"):
            rows[f"this design, {fmt}, {policy}"] = _heavy_row(
                bucket.summarize(usage, policy, PRICE), per_hour + compact_per_hour, hours_year
            )
    # An object per 1-second POST, each with its own WAV header.
    docs = bucket.Usage(HEAVY_HOURS_PER_DAY, pcm_hour + 3600 * HEADER_BYTES, 3600 * HEAVY_HOURS_PER_DAY)
    rows["docs example (object per POST), WAV, standard"] = _heavy_row(
        bucket.summarize(docs, "standard", PRICE), docs_example_per_hour, hours_year
    )
    return rows


def _compaction_per_hour(c: dict) -> float:
    """Compacting an audio-hour: the function's instance time, reading the WAV, writing the
    compacted object, the finished-recording event's delivery (a recording is up to an hour)."""
    vcpu, gib = c["vcpu"], c["memory_gib"]
    return (
        c["cpu_s_per_audio_hour"] / vcpu * (vcpu * PRICE["vcpu_s"] + gib * PRICE["gib_s"])
        + PRICE["invocation"]
        + PRICE["class_a"]
        + PRICE["class_b"]
        + 1000 / TIB * PRICE["pubsub_tib"]
    )


def _heavy_row(b: dict, per_hour: float, hours_year: float) -> dict:
    month = HEAVY_HOURS_PER_DAY * 30 * per_hour
    return {
        "pipeline_first_year": per_hour * hours_year,
        "bucket_first_year": sum(b["first_year"].values()),
        "first_year": per_hour * hours_year + sum(b["first_year"].values()),
        "month_13": month + sum(b["month_13"].values()),
        "month_60": month + sum(b["month_60"].values()),
        "bucket_month_13": sum(b["month_13"].values()),
        "bucket_month_60": sum(b["month_60"].values()),
        "gb_after_first_year": b["gb_after_first_year"],
    }


def _exact(x: float) -> str:
    """A target's dollars: cents for whole dollars, six decimals below a dollar (no rounding onto the line)."""
    return f"${x:,.2f}" if x >= 1 else f"${x:.6f}"


def usd(x: float) -> str:
    if x == 0:
        return "0"
    return f"${x:.4f}" if x >= 0.01 else f"${x:.6f}" if x >= 1e-6 else f"${x:.2e}"


# Issue 15's targets (USD): per user-hour, per idle month, per heavy user's first year.
TARGETS = {
    "current X=1, 1 user": 0.012,
    "current X=10, 1 user": 0.010,
    "legacy X=10, 1 user": 0.010,
    "current X=1, 10,000 users": 0.009,
    "idle month, personal": 0.50,
    "heavy user first year, defaults (WAV, Autoclass)": 100.0,
    "heavy user first year, FLAC compaction + Autoclass": 100.0,
}


def _load_optional(r: dict) -> dict:
    for name in ("codec", "fractional_cpu", "compaction"):
        found = read_result(name)
        if found is None and name != "compaction":
            raise SystemExit(f"cost model needs bench results for: {name} (run the bench first)")
        if found is not None:
            r[name] = found
    return r


def build() -> dict:
    r = _load_optional(_load())
    asm, scale = r["assembler"]["summary"], r["scale"]["summary"]
    columns = [(s, n) for n in (1, big) for s in SENDERS]
    table = {f"{s}, {n:,} user{'s' if n > 1 else ''}": per_user_hour(s, n, r) for s, n in columns}
    steps = {
        "team, pcm (the sizing and encoding before)": per_user_hour("current X=1", 1, r, size="team", encoding="pcm"),
        "team, flac": per_user_hour("current X=1", 1, r, size="team"),
        "personal, pcm": per_user_hour("current X=1", 1, r, size="personal", encoding="pcm"),
        "personal, flac (default)": per_user_hour("current X=1", 1, r),
    }
    designs = [
        "this",
        "object per chunk",
        "rewrite per chunk",
        "rewrite per chunk, 7-day soft delete",
        "rewrite per minute",
        "rewrite per minute, 7-day soft delete",
    ]
    naive = {d: {n: per_user_hour("current X=1", n, r, d) for n in (1, big)} for d in designs}
    p_big = plan(big, asm, scale)
    idle = {
        "personal, 1 shard (default)": idle_month(1, asm, "personal"),
        "team, 1 shard": idle_month(1, asm, "team"),
        f"fleet, {p_big['shards']} shards (10,000-user settings)": idle_month(p_big["shards"], asm, "fleet"),
    }
    per_hour = sum(table["current X=1, 1 user"].values())
    sizes = {
        "personal": {
            "per_user_hour_1_user": per_hour,
            "idle_month": sum(idle["personal, 1 shard (default)"].values()),
        },
        "team": {
            "per_user_hour_1_user": sum(steps["team, flac"].values()),
            "idle_month": sum(idle["team, 1 shard"].values()),
        },
        "fleet": {
            "per_user_hour_10000_users": sum(table["current X=1, 10,000 users"].values()),
            "idle_month": sum(idle[next(k for k in idle if k.startswith("fleet"))].values()),
        },
    }
    heavy = heavy_user(r, per_hour, sum(naive["object per chunk"][1].values()))
    measured = {
        "current X=1, 1 user": per_hour,
        "current X=10, 1 user": sum(table["current X=10, 1 user"].values()),
        "legacy X=10, 1 user": sum(table["legacy X=10, 1 user"].values()),
        "current X=1, 10,000 users": sum(table["current X=1, 10,000 users"].values()),
        "idle month, personal": sum(idle["personal, 1 shard (default)"].values()),
        "heavy user first year, defaults (WAV, Autoclass)": heavy["this design, WAV, autoclass"]["first_year"],
    }
    if "this design, compacted to FLAC, autoclass" in heavy:
        measured["heavy user first year, FLAC compaction + Autoclass"] = heavy[
            "this design, compacted to FLAC, autoclass"
        ]["first_year"]
    data = {
        "prices": PRICE,
        "size_vcpu_gib": SIZES,
        "targets": {k: {"target": TARGETS[k], "measured": v, "pass": v <= TARGETS[k]} for k, v in measured.items()},
        "sizes": sizes,
        "per_user_hour": table,
        "sizing_steps_1_user": steps,
        "naive_per_user_hour": naive,
        "idle_per_month": idle,
        "heavy_user": heavy,
        "plan_10000": p_big,
        "flac_ratio_speech": _flac_ratio(r),
        "assumptions": {"utilization": UTILIZATION, "granule_s": GRANULE_S, "gcs_request_s": GCS_REQUEST_S},
    }
    return {"data": data, "markdown": _markdown(r, data)}


def _table(columns: dict) -> list[str]:
    names = list(columns)
    items = list(dict.fromkeys(k for c in columns.values() for k in c))
    lines = ["| item | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for item in items:
        lines.append(
            f"| {item} | " + " | ".join(usd(columns[n][item]) if item in columns[n] else "–" for n in names) + " |"
        )
    lines.append(
        "| **total per user-hour** | " + " | ".join(f"**{usd(sum(columns[n].values()))}**" for n in names) + " |"
    )
    lines.append(
        "| per user-month at 16 h/day | "
        + " | ".join(usd(sum(columns[n].values()) * STREAM_HOURS_PER_MONTH) for n in names)
        + " |"
    )
    return lines


big = 10_000


def _long_pass_note(r: dict, data: dict) -> list[str]:
    """What the passes of the freshness run (continuous 1-s senders) imply for the bill."""
    fresh = read_result("freshness")
    if not fresh:
        return []
    longest = max(p["wall_s"] for p in fresh["passes"])
    budget = r["scale"]["summary"]["pass_seconds"]
    if longest < 0.9 * budget:
        return []
    vcpu, gib = SIZES["personal"]["assembler"]
    per_shard_hour = 60 * budget * (vcpu * PRICE["vcpu_s"] + gib * PRICE["gib_s"])
    return [
        "**As the assembler runs today, a pass that meets a continuous stream lasts its whole budget.** In the",
        f"freshness run (senders posting every second) a pass took {longest} s: it keeps pulling while chunks keep",
        "arriving until half of PASS_SECONDS, flushes, then loops without work until PASS_SECONDS",
        f"(docs/performance.md, section 3). Billed, that is {budget:.0f} s of a vCPU per tick per shard, "
        f"{usd(per_shard_hour)} per hour per shard instead of the pass time above: at 1 user streaming with X=1 that",
        f"alone is {usd(per_shard_hour)} per user-hour; at 10,000 users it adds up to "
        f"{usd(per_shard_hour * data['plan_10000']['shards'] / 10_000)} per user-hour. The tables assume the pass ends when its",
        "work is done.",
        "",
    ]


def _markdown(r: dict, data: dict) -> str:
    from bench.report import provenance

    asm, ing = r["assembler"]["summary"], r["ingest"]["summary"]
    p = data["plan_10000"]
    sources = [r[n] for n in ("ingest", "assembler", "scale", "codec", "fractional_cpu", "compaction") if n in r]
    personal = SIZES["personal"]
    out = [
        "<!-- GENERATED by `make bench` (bench/cost.py) from bench/results/*.json. Do not edit by hand:",
        "     change bench/cost.py and run `python -m bench.run --report`. -->",
        "# Cost",
        "",
        provenance(sources),
        "",
        "Dollars per **user-hour** of streamed audio (16 kHz PCM16 mono, 115.2 MB), at the list prices",
        "of [prices.md](prices.md) (us-central1, late 2026; verify before quoting; `PRICE` in `bench/cost.py`),",
        "computed from the counts measured by `make bench`: Cloud Storage",
        "requests by kind counted at the fault proxy, ingest latency and CPU per request (also under a CPU",
        "quota), the FLAC codec's bytes on real speech, assembler CPU per pass, function invocations per",
        "tick. Free tiers are ignored.",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
        *[
            f"| {name} <= {_exact(v['target'])} | {_exact(v['measured'])} | {'PASS' if v['pass'] else '**FAIL**'} |"
            for name, v in data["targets"].items()
        ],
        "",
        *_bounds(r, data),
        "## By deployment size",
        "",
        'What each `deployment_size` (README, "Sizing") costs, current sender X=1: per user-hour where it is meant to',
        "run, and per month with nobody streaming (details below).",
        "",
        "| size | per user-hour | idle month |",
        "|---|---:|---:|",
        f"| personal (one person) | {usd(data['sizes']['personal']['per_user_hour_1_user'])} at 1 user | {usd(data['sizes']['personal']['idle_month'])} |",
        f"| team (the sizing before `deployment_size`) | {usd(data['sizes']['team']['per_user_hour_1_user'])} at 1 user | {usd(data['sizes']['team']['idle_month'])} |",
        f"| fleet | {usd(data['sizes']['fleet']['per_user_hour_10000_users'])} at 10,000 users | {usd(data['sizes']['fleet']['idle_month'])} |",
        "",
        "## This design",
        "",
        "Columns: the sender (current Omi backend with interval X=1 or X=10, both sending 1-second",
        "POSTs; a legacy sender POSTing 10 s of audio at once) and the number of users streaming: one",
        "person on the `personal` deployment size (the default), 10,000 users on the `fleet` size",
        '(README, "Sizing").',
        "",
        *_table(data["per_user_hour"]),
        "",
        "What moved one person's hour (current sender, X=1), size by size and with or without FLAC chunks:",
        "",
        *_table(data["sizing_steps_1_user"]),
        "",
        "How each line is computed:",
        "",
        "- **ingest requests**: one invocation per POST (3,600 per hour for 1-second POSTs, 360 for legacy 10-second POSTs).",
        f"- **ingest CPU + memory**: `personal` runs ingest at {personal['ingest'][0]} vCPU, {personal['ingest'][1]} GiB,",
        "  concurrency 1. At 1 user nothing overlaps, so each burst is one billed period of",
        "  `requests in the burst x p50 ack latency` rounded up to 100 ms, the latency measured with ingest",
        '  under a CPU quota of the size\'s vCPU ([performance.md](performance.md), "Ingest under a fractional vCPU"):',
        "  the X=10 sender's ten back-to-back POSTs share one period. At 10,000 users (`fleet`: 1 vCPU, 512 MiB)",
        "  instances are busy and the billed time is the measured server CPU per request "
        f"({(ing.get('c50') or ing['c1'])['ingest']['cpu_ms_per_request']['server']} ms at 50 connections) / {UTILIZATION} utilization.",
        "- **Pub/Sub**: every chunk is published once and delivered once to the assembler's subscription:",
        f"  2 x (bytes published + ~{ATTRIBUTE_BYTES} B of attributes) per POST, at $40/TiB. With `CHUNK_ENCODING=flac`",
        f"  (the default) ingest publishes the chunk as FLAC: {data['flac_ratio_speech']} of the PCM's bytes on real",
        "  speech (samples/speech-16k.wav; silence compresses far more, and noise is published as PCM when FLAC",
        f"  saves nothing). Plus one more delivery of the chunks a pass finds still settling and releases: {asm['released_per_chunk']}",
        "  per chunk measured (SETTLE_SECONDS / tick = 10/60).",
        f"- **assembler invocations**: one per tick per shard ({p['shards']} shards at 10,000 users), shared by all users.",
        f"- **assembler CPU + memory**: at 1 user the instance time of a pass ({asm['pass_wall_s_single']} s measured at",
        f"  1 vCPU, mostly the final empty pull; its {asm['pass_cpu_s_single']} CPU-s stretched to `personal`'s",
        f"  {personal['assembler'][0]} vCPU) every minute, at {personal['assembler'][1]} GiB; at 10,000 users the measured CPU per",
        f"  user-minute ({p['cpu_ms_per_user_minute']} ms: pulling, decoding, flushing and acking a user's minute) / {UTILIZATION},",
        f"  at 1 vCPU and {p['memory_gib']} GiB.",
        "- **Storage**: a recording-hour is one first flush, 59 more (a steady flush: part upload, two composes,",
        f"  header upload, two state writes: Class A; one state read of {asm['state_object_bytes']} B on average: Class B; no",
        "  audio is ever downloaded) and the ticks after the last audio until it is finalized, each counted at the",
        "  proxy. A streaming pass's own overhead is counted apart, once per shard per tick, shared by the users: at",
        f"  1 user the shard lease ({counts(asm['busy_pass_overhead']['proxy_counts'])}; no state listing while the recording is open,",
        f'  docs/design.md, "An idle pass"), with many users also a sweep every tick ({counts(asm["full_idle_pass"]["proxy_counts"])},',
        "  a list page per 1,000 users). The ticks after the last audio are counted less what an idle shard's probe",
        "  requests anyway. The same for every sender, since a tick flushes a user's minute at once (legacy: 6",
        "  chunks of 10 s).",
        "",
        *_long_pass_note(r, data),
        "The X=10 sender costs the same as X=1 except at 1 user, where its bursts fill the 100 ms billing",
        "granule better. The legacy sender's 10-second POSTs cut ingest requests and CPU by about",
        "ten, and Pub/Sub bills the same bytes.",
        "",
        "Not in the table: Cloud Logging, whose price is not in prices.md. Ingest writes no log line per",
        "accepted chunk unless `LOG_ACCEPTED_CHUNKS=true` (that would be 3,600 entries per user-hour); the",
        "assembler writes a few lines per pass. Cloud Run itself logs one entry per POST, which Terraform keeps",
        "out of storage unless `keep_ingest_request_logs` is set (their URLs hold the token).",
        "",
        "## Naive designs, beside this one (current sender, X=1)",
        "",
        "- *object per chunk*: ingest uploads each POST as its own object; no Pub/Sub, no assembler (the design",
        "  of Omi's docs example).",
        "- *rewrite per chunk*: each POST reads the user's WAV and writes it back one second longer.",
        "- *rewrite per minute*: this design's buffering, but the WAV is downloaded and re-uploaded instead of composed.",
        "- *7-day soft delete*: the Cloud Storage default for new buckets; every overwritten copy stays billable for",
        "  7 days (infra/storage.tf turns soft delete off for that reason). CPU to move bytes is an estimate",
        "  at the rate the assembler uploads its parts.",
        "",
        "Each at the same sizes as this design (`personal` at 1 user, `fleet` at 10,000).",
        "",
        "| design | per user-hour, 1 user | per user-hour, 10,000 users | per user-month at 16 h/day, 10,000 users | largest item (10,000 users) |",
        "|---|---:|---:|---:|---|",
        *[
            f"| {d} | {usd(sum(v[1].values()))} | {usd(sum(v[big].values()))} | "
            f"{usd(sum(v[big].values()) * STREAM_HOURS_PER_MONTH)} | {max(v[big], key=v[big].get)} "
            f"({usd(max(v[big].values()))}) |"
            for d, v in data["naive_per_user_hour"].items()
        ],
        "",
        "Item by item in `bench/results/cost.json`. The naive designs' CPU to move bytes is a rough estimate;",
        "their Class A writes and soft-deleted bytes are exact arithmetic.",
        "",
        *_heavy_markdown(data),
        "## Idle cost per month (no user streaming)",
        "",
    ]
    for name, items in data["idle_per_month"].items():
        out += [f"**{name}**", "", "| item | per month |", "|---|---:|"]
        out += [f"| {k} | {usd(v)} |" for k, v in items.items()]
        out += [f"| **total** | **{usd(sum(items.values()))}** |", ""]
    idle, daily = asm["idle_pass"], asm["full_idle_pass"]
    out += [
        f"An idle pass (nothing waiting, no open recording) measured {idle['wall_s']} s of wall time and {idle['cpu_s']}",
        'CPU-s: it reads the shard lease and makes one short pull, and writes nothing (docs/design.md, "An idle',
        f'pass"). Once a day per shard a full pass sweeps for old erase markers: {daily["wall_s"]} s, mostly the',
        "final empty pull. Real Pub/Sub may answer an empty pull sooner or later than the emulator. Ingest costs",
        "nothing when idle (min instances 0). Secret Manager is read when an ingest instance starts: $0.03 per",
        "10,000 starts, negligible. Cloud Scheduler's first 3 jobs per billing account are free, so a personal",
        "deployment's one job usually costs nothing.",
        "",
    ]
    return "\n".join(out) + "\n"


def _bounds(r: dict, data: dict) -> list[str]:
    """For each target missed: by how much, what bounds it, and what would move it."""
    missed = {k: v for k, v in data["targets"].items() if not v["pass"]}
    if not missed:
        return []
    out = ["**Missed, and what bounds them:**", ""]
    for name, v in missed.items():
        over = v["measured"] - v["target"]
        out.append(f"- **{name}**: over by {usd(over)} ({over / v['target']:.0%}). " + _what_bounds(name, r, data))
    return [*out, ""]


def _what_bounds(name: str, r: dict, data: dict) -> str:
    hour = data["per_user_hour"].get(name, {})
    fixed = sum(x for k, x in hour.items() if k.startswith(("Pub/Sub", "storage Class A", "ingest requests")))
    asm = r["assembler"]["summary"]
    vcpu, gib = SIZES["personal"]["assembler"]
    pull_cut = 60 * 0.5 * (vcpu * PRICE["vcpu_s"] + gib * PRICE["gib_s"])
    if name.startswith("current X=10"):
        ingest_vcpu = SIZES["personal"]["ingest"][0]
        burst, single = (
            _burst_s(r, "current X=10", ingest_vcpu, "flac"),
            _burst_s(r, "current X=1", ingest_vcpu, "flac"),
        )
        return (
            f"Pub/Sub bytes, the flush writes and the POSTs alone are {usd(fixed)}. Besides, the X=10 sender's ten "
            f"back-to-back POSTs outrun `personal`'s {ingest_vcpu} vCPU quota (bench/fractional_cpu.py: a mean of "
            f"{burst * 100:.0f} ms each back to back, {single * 1000:.0f} ms at the 1-s cadence), so a burst bills "
            f"{_ceil_granule(burst) * 1000:.0f} ms instead of {_ceil_granule(10 * single) * 1000:.0f}. "
            f"The assembler's passes ({asm['pass_wall_s_single']} s each, mostly the final empty pull, which the emulator "
            f"holds ~1 s) cost {usd(hour.get('assembler CPU + memory', 0))}: a final pull bounded like the idle probe (0.5 s) "
            f"would take up to {usd(pull_cut)} off, if real Pub/Sub answers a drained subscription that fast."
        )
    if name.endswith("10,000 users"):
        level = r["ingest"]["summary"].get("c50", {})
        if "ingest_pcm" not in level:
            return f"Pub/Sub bytes, the flush writes and the POSTs alone are {usd(fixed)}."
        flac, pcm = (level[s]["cpu_ms_per_request"]["server"] for s in ("ingest", "ingest_pcm"))
        extra = codec_cpu_per_user_hour(flac, pcm)
        return (
            f"Pub/Sub bytes, the flush writes and the POSTs alone are {usd(fixed)}. The FLAC codec costs ingest "
            f"{flac - pcm:.2f} CPU-ms per request under load ({pcm} with CHUNK_ENCODING=pcm, {flac} with flac, at 50 "
            f"connections), {usd(extra)} per user-hour: in one thread it takes about 1 ms, but its calls back into Python "
            "contend for the GIL with gunicorn's and gRPC's threads. It still pays for itself several times over in "
            f"Pub/Sub bytes; that CPU aside, the hour is {usd(data['targets'][name]['measured'] - extra)}. "
            "What would move the rest: a shorter SETTLE_SECONDS (its redelivered share of Pub/Sub is "
            f"{asm['released_per_chunk']} of a delivery per chunk), or one state write per flush instead of two (the "
            "user lease and the commit)."
        )
    if name.startswith("heavy user"):
        heavy = data["heavy_user"]
        wav, flac = heavy["this design, WAV, autoclass"], heavy.get("this design, compacted to FLAC, autoclass")
        text = (
            f"The pipeline is {usd(wav['pipeline_first_year'])} of it and the WAV bucket under Autoclass "
            f"{usd(wav['bucket_first_year'])} ({wav['gb_after_first_year']:,} GB by the year's end)."
        )
        if flac:
            text += (
                f' With `recordings_compaction = "flac"` (off by default) the same year is {usd(flac["first_year"])}, '
                "under the target; Opus saves more bytes but its encoder's CPU costs more than that in year one."
            )
        return text
    return f"Pub/Sub bytes, the flush writes and the POSTs alone are {usd(fixed)}."


def _heavy_markdown(data: dict) -> list[str]:
    rows = data["heavy_user"]
    out = [
        f"## One heavy user over the years ({HEAVY_HOURS_PER_DAY} h a day), bucket included",
        "",
        f"The pipeline at the `personal` size (current sender, X=1: {usd(data['targets']['current X=1, 1 user']['measured'])}",
        f"per user-hour) and the recordings bucket, day by day (bench/bucket.py): {HEAVY_HOURS_PER_DAY} recordings a day",
        "(MAX_RECORDING_SECONDS closes one every hour), never read again. *standard*: Standard storage forever;",
        "*autoclass*: `recordings_autoclass = true` (the default; terminal class Archive): Standard, then Nearline",
        "after 30 days, Coldline after 90, Archive after 365; *lifecycle*: SetStorageClass rules at the same ages",
        "instead, which pay a Class A operation of the new class per object moved and, unlike Autoclass,",
        "retrieval fees when a recording is read and minimum-duration charges when one is erased early.",
        "*compacted*: `recordings_compaction` replaces each finished WAV with FLAC (lossless) or Opus (lossy),",
        "its compaction cost added to the pipeline's hour. Month 13 is the first month of year 2; month 60",
        "the last of year 5.",
        "",
        "| design, stored format, storage policy | pipeline, first year | bucket, first year | **first year** "
        "| month 13 (bucket) | month 60 (bucket) | GB after a year |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, v in rows.items():
        out.append(
            f"| {name} | {usd(v['pipeline_first_year'])} | {usd(v['bucket_first_year'])} | **{usd(v['first_year'])}** "
            f"| {usd(v['month_13'])} ({usd(v['bucket_month_13'])}) | {usd(v['month_60'])} ({usd(v['bucket_month_60'])}) "
            f"| {v['gb_after_first_year']:,} |"
        )
    out += [
        "",
        "Autoclass and lifecycle rules cost the same for audio nobody reads; Autoclass wins as soon as",
        "recordings are read back or erased early, and its fee ($0.0025 per 1,000 objects a month) is cents",
        "at one object per recording-hour. The docs example's objects (one per 1-second POST, ~32 KB) are",
        "under Autoclass's 128 KiB minimum, and a lifecycle rule would pay a Class A operation for each of",
        "its 21 million objects a year, so its audio stays in Standard.",
        "",
    ]
    return out
