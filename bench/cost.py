"""Section 5, cost: dollars per user-hour from the measured counts (bench/results/*.json) at
the list prices of docs/prices.md, for this design and for naive designs; the idle cost per
month; and the assembler settings for a number of users. Writes docs/cost.md.
"""

from __future__ import annotations

import math

from bench.common import read_result

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
}
INGEST_VCPU, INGEST_GIB = 1, 0.5  # infra/variables.tf: ingest_cpu, ingest_memory
ASSEMBLER_VCPU, ASSEMBLER_GIB = 1, 1.0  # assembler_cpu, assembler_memory
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


def _ops_kinds(counts: dict) -> tuple[float, float]:
    """(Class A, Class B) requests in a proxy count; deletes are free."""
    a = sum(counts.get(k, 0) for k in ("upload", "compose", "list", "patch"))
    b = sum(counts.get(k, 0) for k in ("download", "metadata"))
    return a, b


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


def per_user_hour(sender: str, users: int, r: dict, design: str = "this") -> dict:
    """Dollars per user-hour, by item."""
    ing, asm, scale = r["ingest"]["summary"], r["assembler"]["summary"], r["scale"]["summary"]
    requests, body, bursts, per_burst, chunks_per_flush = SENDERS[sender]
    legacy = body > 32_000 and "legacy_10s" in ing
    level = ing["legacy_10s"] if legacy else ing.get("c50") or ing[max(ing, key=lambda k: ing[k]["ingest"]["rps"])]
    cpu_req_s = level["ingest"]["cpu_ms_per_request"]["server"] / 1000
    if legacy:
        latency_s = level["ingest"]["p50_ms"] / 1000  # at 10 connections: an upper bound for 1 user
    else:
        latency_s = ing["c1"]["ingest"]["p50_ms"] / 1000
    cost = {}
    cost["ingest requests"] = requests * PRICE["invocation"]
    if users == 1:
        billed = bursts * _ceil_granule(per_burst * latency_s)
    else:
        billed = requests * cpu_req_s / UTILIZATION
    cost["ingest CPU + memory"] = billed * (INGEST_VCPU * PRICE["vcpu_s"] + INGEST_GIB * PRICE["gib_s"])

    p = plan(users, asm, scale)
    if design == "this" or design.startswith("rewrite per minute"):
        message = max(1000, body + ATTRIBUTE_BYTES)
        # Chunks still settling when a pass runs are released and delivered again: measured share.
        released = asm["released_per_chunk"]
        cost["Pub/Sub (publish + delivery)"] = requests * (2 + released) * message / TIB * PRICE["pubsub_tib"]
        ticks = 60 * p["shards"]
        cost["assembler invocations"] = ticks / users * PRICE["invocation"]
        if users == 1:
            assembler_s = 60 * asm["pass_wall_s_single"]  # instance time of the passes
        else:
            assembler_s = 60 * p["cpu_ms_per_user_minute"] / 1000 / UTILIZATION
        gib = ASSEMBLER_GIB if users == 1 else p["memory_gib"]
        cost["assembler CPU + memory"] = assembler_s * (ASSEMBLER_VCPU * PRICE["vcpu_s"] + gib * PRICE["gib_s"])

    if design == "this":
        # A recording-hour: the first flush, 59 more and the finalizing tick, each pass less
        # what an idle pass does too (state listing, shard lease): that per-pass overhead is
        # paid once per shard per tick, shared by the users (a list page per 1,000 users).
        idle = asm["idle_pass"]["proxy_counts"]

        def user_part(counts):
            return {k: counts.get(k, 0) - idle.get(k, 0) for k in set(counts) | set(idle)}

        finalize = {
            k: v - (asm["finalize_passes"] - 1) * idle.get(k, 0) for k, v in asm["requests_finalize_pass"].items()
        }
        parts = [user_part(asm["requests_first_flush"]), user_part(finalize)]
        steady = user_part(asm["requests_steady_pass"])
        class_a = sum(_ops_kinds(c)[0] for c in parts) + 59 * _ops_kinds(steady)[0]
        class_b = sum(_ops_kinds(c)[1] for c in parts) + 59 * _ops_kinds(steady)[1]
        pages = math.ceil(users / 1000)
        over_a = idle.get("list", 0) * pages + _ops_kinds(idle)[0] - idle.get("list", 0)
        over_b = _ops_kinds(idle)[1]
        per_user = 60 * p["shards"] / users
        cost["storage Class A (flush writes)"] = class_a * PRICE["class_a"]
        cost["storage Class B (state reads)"] = class_b * PRICE["class_b"]
        cost["storage, per-pass requests (" + ", ".join(f"{k} {v}" for k, v in sorted(idle.items())) + ")"] = (
            per_user * (over_a * PRICE["class_a"] + over_b * PRICE["class_b"])
        )
    else:
        n = 60 if design.startswith("rewrite per minute") else requests
        size = 115.2e6 / n  # bytes added per write
        cost["storage Class A (writes)"] = n * PRICE["class_a"]
        if design.startswith("rewrite"):
            moved = size * n * (n + 1) / 2  # each write re-uploads the whole file
            cost["storage Class B (read back the file)"] = n * PRICE["class_b"]
            # CPU to move the bytes both ways, at the rate the assembler uploads a part
            # (a 1.92 MB part inside one flush's CPU: an upper bound of CPU per byte).
            rate = 1.92e6 / asm["flush_time"][0]["cpu_s"]
            cost["CPU to move the file (estimate)"] = 2 * moved / rate * PRICE["vcpu_s"] / UTILIZATION
            if design.endswith("soft delete"):
                # Overwritten copies billed like live bytes for 7 days.
                cost["soft-deleted copies (7 days)"] = (moved - 115.2e6) / 1e9 * 7 / 30 * PRICE["gb_month"]
    return cost


def idle_month(passes: int, asm: dict) -> dict:
    idle = asm["idle_pass"]
    a, b = _ops_kinds(idle["proxy_counts"])  # what every shard's idle pass requests
    ticks = TICKS_PER_MONTH * passes
    return {
        f"Cloud Scheduler ({passes} job{'s' if passes > 1 else ''}; 3 free per billing account)": passes
        * PRICE["scheduler_job"],
        "tick messages (1 KB min, publish + Eventarc delivery)": 2 * ticks * 1000 / TIB * PRICE["pubsub_tib"],
        "assembler invocations": ticks * PRICE["invocation"],
        "idle pass instance time (measured pass wall time)": ticks
        * _ceil_granule(idle["wall_s"])
        * (ASSEMBLER_VCPU * PRICE["vcpu_s"] + ASSEMBLER_GIB * PRICE["gib_s"]),
        f"storage requests of an idle pass ({', '.join(f'{k} {v}' for k, v in sorted(idle['proxy_counts'].items()))})": ticks
        * (a * PRICE["class_a"] + b * PRICE["class_b"]),
    }


def usd(x: float) -> str:
    if x == 0:
        return "0"
    return f"${x:.4f}" if x >= 0.01 else f"${x:.6f}" if x >= 1e-6 else f"${x:.2e}"


def build() -> dict:
    r = _load()
    asm, scale = r["assembler"]["summary"], r["scale"]["summary"]
    columns = [(s, n) for n in (1, big) for s in SENDERS]
    table = {f"{s}, {n:,} user{'s' if n > 1 else ''}": per_user_hour(s, n, r) for s, n in columns}
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
        "1 shard (default)": idle_month(1, asm),
        f"{p_big['shards']} shards (10,000-user settings)": idle_month(p_big["shards"], asm),
    }
    data = {
        "prices": PRICE,
        "per_user_hour": table,
        "naive_per_user_hour": naive,
        "idle_per_month": idle,
        "plan_10000": p_big,
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
    per_shard_hour = 60 * budget * (ASSEMBLER_VCPU * PRICE["vcpu_s"] + ASSEMBLER_GIB * PRICE["gib_s"])
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
    out = [
        "<!-- GENERATED by `make bench` (bench/cost.py) from bench/results/*.json. Do not edit by hand:",
        "     change bench/cost.py and run `python -m bench.run --report`. -->",
        "# Cost",
        "",
        provenance([r["ingest"], r["assembler"], r["scale"]]),
        "",
        "Dollars per **user-hour** of streamed audio (16 kHz PCM16 mono, 115.2 MB), at the list prices",
        "of [prices.md](prices.md) (us-central1, late 2026; verify before quoting; `PRICE` in `bench/cost.py`),",
        "computed from the counts measured by `make bench`: Cloud Storage",
        "requests by kind counted at the fault proxy, ingest server CPU per request, assembler CPU per",
        "pass, function invocations per tick. Free tiers are ignored.",
        "",
        "## This design",
        "",
        "Columns: the sender (current Omi backend with interval X=1 or X=10, both sending 1-second",
        "POSTs; a legacy sender POSTing 10 s of audio at once) and the number of users streaming.",
        "",
        *_table(data["per_user_hour"]),
        "",
        f"Storage of the finished WAV is separate: 115.2 MB per user-hour, {usd(0.1152 * PRICE['gb_month'])} per month kept.",
        "",
        "How each line is computed:",
        "",
        "- **ingest requests**: one invocation per POST (3,600 per hour for 1-second POSTs, 360 for legacy 10-second POSTs).",
        "- **ingest CPU + memory** (1 vCPU, 512 MiB): at 1 user nothing overlaps, so each burst is one billed period of",
        f"  `requests in the burst x p50 ack latency` ({ing['c1']['ingest']['p50_ms']} ms measured at 1 connection) rounded up",
        "  to 100 ms: the X=10 sender's ten back-to-back POSTs share one period. At 10,000 users instances are busy and the",
        f"  billed time is the measured server CPU per request "
        f"({(ing.get('c50') or ing['c1'])['ingest']['cpu_ms_per_request']['server']} ms at 50 connections) / {UTILIZATION} utilization.",
        "- **Pub/Sub**: every chunk is published once and delivered once to the assembler's subscription:",
        f"  2 x (body + ~{ATTRIBUTE_BYTES} B of attributes) per POST, at $40/TiB; plus one more delivery of the chunks a",
        f"  pass finds still settling and releases: {asm['released_per_chunk']} per chunk measured (SETTLE_SECONDS / tick = 10/60).",
        f"- **assembler invocations**: one per tick per shard ({p['shards']} shards at 10,000 users), shared by all users.",
        f"- **assembler CPU + memory** (1 vCPU; 1 GiB at 1 user, {p['memory_gib']} GiB in the 10,000-user settings): at 1 user the instance time of a pass ({asm['pass_wall_s_single']} s",
        "  measured, mostly the final empty pull) every minute; at 10,000 users the measured CPU per user-minute",
        f"  ({p['cpu_ms_per_user_minute']} ms: pulling, decoding, flushing and acking a user's minute) / {UTILIZATION}.",
        "- **Storage**: a recording-hour is one first flush, 59 more (a steady flush: part upload, two composes,",
        f"  header upload, two state writes: Class A; one state read of {asm['state_object_bytes']} B on average: Class B; no",
        "  audio is ever downloaded) and the finalizing tick, each counted at the proxy less what an idle pass",
        f"  requests too ({', '.join(f'{k} {v}' for k, v in sorted(asm['idle_pass']['proxy_counts'].items()))}). That per-pass",
        "  overhead is paid once per shard per tick and shared by the users (a list page per 1,000 users).",
        "  The same for every sender, since a tick flushes a user's minute at once (legacy: 6 chunks of 10 s).",
        "",
        *_long_pass_note(r, data),
        "The X=10 sender costs the same as X=1 except at 1 user, where its bursts fill the 100 ms billing",
        "granule ten times better. The legacy sender's 10-second POSTs cut ingest requests and CPU by about",
        "ten, and Pub/Sub bills the same bytes.",
        "",
        "Not in the table: Cloud Logging, whose price is not in prices.md. Ingest writes no log line per",
        "accepted chunk unless `LOG_ACCEPTED_CHUNKS=true` (that would be 3,600 entries per user-hour); the",
        "assembler writes a few lines per pass. Cloud Run itself logs one entry per POST, which Terraform keeps",
        "out of storage unless `keep_ingest_request_logs` is set (their URLs hold the token).",
        "",
        "## Naive designs, beside this one (current sender, X=1)",
        "",
        "- *object per chunk*: ingest uploads each POST as its own object; no Pub/Sub, no assembler.",
        "- *rewrite per chunk*: each POST reads the user's WAV and writes it back one second longer.",
        "- *rewrite per minute*: this design's buffering, but the WAV is downloaded and re-uploaded instead of composed.",
        "- *7-day soft delete*: the Cloud Storage default for new buckets; every overwritten copy stays billable for",
        "  7 days (infra/storage.tf turns soft delete off for that reason). CPU to move bytes is an estimate",
        "  at the rate the assembler uploads its parts.",
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
        "## Idle cost per month (no user streaming)",
        "",
    ]
    for name, items in data["idle_per_month"].items():
        out += [f"**{name}**", "", "| item | per month |", "|---|---:|"]
        out += [f"| {k} | {usd(v)} |" for k, v in items.items()]
        out += [f"| **total** | **{usd(sum(items.values()))}** |", ""]
    idle = asm["idle_pass"]
    out += [
        f"An idle pass measured {idle['wall_s']} s of wall time and {idle['cpu_s']} CPU-s: almost all of it is the",
        "final pull waiting for messages that do not come (the emulator returns an empty pull after about",
        "a second; the assembler allows 2 s). Real Pub/Sub may answer an empty pull sooner or later than the",
        "emulator; that wait is the largest idle item. Ingest costs nothing when idle (min instances 0).",
        "Secret Manager is read when an ingest instance starts: $0.03 per 10,000 starts, negligible.",
        "",
    ]
    return "\n".join(out) + "\n"
