"""docs/performance.md's sections on what one person's deployment needs: ingest under a
fractional vCPU (bench/fractional_cpu.py), the chunk codec (bench/codec.py) and the compaction
of finished recordings (bench/compaction.py). Each is empty when its result is missing."""

from __future__ import annotations

import statistics

from bench.common import read_result


def sections() -> list[str]:
    return [*_fractional_cpu(), *_codec(), *_compaction()]


def _fractional_cpu() -> list[str]:
    fr = read_result("fractional_cpu")
    if not fr:
        return []
    s = fr["settings"]
    out = [
        "## 5. Ingest under a fractional vCPU",
        "",
        "Cloud Run runs a function below 1 vCPU only at concurrency 1, and the `personal` size runs ingest at",
        '0.167 vCPU (README, "Sizing"). Here ingest is served by functions-framework inside a cgroup whose CFS',
        f"quota is that share of a {s['cfs_period_ms']:.0f} ms period (`bench/cpu_quota.py`), against the Pub/Sub emulator",
        "outside the quota, with 1-second chunks of real speech on one keep-alive connection. *cold start*: from",
        f"starting the server to its first 200 (median of {s['cold_repeats']}); *1/s*: {s['cadence_posts']} POSTs at the real",
        f"sender's cadence; *back to back*: {s['back_to_back_posts']} POSTs with no pause (a sender catching up after a gap).",
        "Memory is the peak proportional set size of the server's processes.",
        "",
        "| encoding | vCPU | cold start, s | first POST, ms | 1/s p50 / p99, ms | back to back mean / p99, ms | CPU-ms per POST | memory, MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for enc, rows in fr["encodings"].items():
        for quota, row in rows.items():
            cold, cad, b2b = row["cold_start"], row["cadence"], row["back_to_back"]
            out.append(
                f"| {enc} | {quota} | {cold['first_200_s']} | {cold['first_post_ms']} | {cad['p50_ms']} / {cad['p99_ms']} "
                f"| {statistics.mean(b2b['latencies_ms']):.1f} / {b2b['p99_ms']} | {b2b['cpu_ms_per_post']} "
                f"| {row['memory']['pss_mib']} |"
            )
    flac = fr["encodings"].get("flac", {})
    personal = flac.get("0.167")
    if personal:
        out += [
            "",
            "At the sender's cadence a POST's few CPU-ms fit inside one period's share, so its latency hardly moves",
            "with the fraction. A cold start is CPU-bound (importing the runtime, the Pub/Sub client and gunicorn), so",
            f"it grows as 1 / vCPU: {personal['cold_start']['first_200_s']} s at 0.167 vCPU, within the sender's 15 s timeout; at",
            f"0.083 it is {flac.get('0.083', {}).get('cold_start', {}).get('first_200_s')} s, too close to it, which is why",
            "`personal` is 0.167 and not 0.083. The codec loads on a background thread after the first request, and",
            'ingest publishes PCM until it is there (docs/design.md, "The message contract").',
        ]
    return [*out, ""]


def _codec() -> list[str]:
    c = read_result("codec")
    if not c:
        return []
    out = [
        "## 6. The chunk codec",
        "",
        f"`omi_receiver/runtime/codec.py` at compression level {c['compression_level']}, on 1-second chunks: bytes published per",
        "byte of PCM, and CPU per chunk to encode and verify (decode and compare) in ingest and to decode in the",
        f"assembler. FLAC is used only when it saves at least {c['min_saving']:.0%}; white noise goes as PCM.",
        "",
        "| audio | rate | bytes ratio | encode + verify, CPU-ms | decode, CPU-ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for rate in ("16000", "8000"):
        for kind, row in c[rate].items():
            if kind == "economics":
                continue
            out.append(
                f"| {kind.replace('_', ' ')} | {rate} | {row['bytes_ratio']} | {row['encode_verify_cpu_ms']} "
                f"| {row.get('decode_cpu_ms') or '–'} |"
            )
    e = c["16000"]["economics"]
    out += [
        "",
        f"On speech at 16 kHz the Pub/Sub bytes it saves are worth {e['saving_over_cpu']}x the CPU it costs at list prices",
        f"({e['pubsub_saved_usd_per_user_hour']:.4f} USD per user-hour saved). Importing the codec (soundfile and numpy)",
        f"takes {c['import_ms']['soundfile']['soundfile']} ms ({c['import_ms']['soundfile']['numpy']} ms of it numpy).",
        "",
    ]
    return out


def _compaction() -> list[str]:
    c = read_result("compaction")
    if not c:
        return []
    s = c["summary"]
    out = [
        "## 7. Compaction of finished recordings",
        "",
        f"`omi_receiver/runtime/compaction` on {c['settings']['recording_seconds'] // 60} minutes of speech, per audio-hour, at the",
        f"compactor's size ({s['flac']['vcpu']} vCPU, {s['flac']['memory_gib']} GiB):",
        "",
        "| format | bytes per audio-hour | of the WAV | encode, CPU-s | verify, CPU-s |",
        "|---|---:|---:|---:|---:|",
        f"| WAV | {s['wav']['bytes_per_audio_hour'] / 1e6:.1f} MB | 1 | – | – |",
    ]
    for fmt in ("flac", "opus"):
        row = s[fmt]
        out.append(
            f"| {fmt.upper()} | {row['bytes_per_audio_hour'] / 1e6:.1f} MB | {row['ratio_to_wav']} "
            f"| {row['encode_cpu_s_per_audio_hour']} | {row['verify_cpu_s_per_audio_hour']} |"
        )
    out += [
        "",
        "Opus through libsndfile spends minutes of CPU per audio-hour; docs/cost.md weighs that against the",
        "bytes it saves over the years.",
        "",
    ]
    return out
