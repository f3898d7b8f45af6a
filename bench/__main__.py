"""``make bench`` / ``python -m bench``: the service against the reference method, side by side.

(a) AP throughput: our exact vectorised COCO AP vs pycocotools (bench/ap.py).
(b) Samples/s of all seven rewards: a 2-worker server under concurrent 64-sample batches vs the
    reference method (bench/reference.py) in this process. Target: 25x.
(c) p50/p99 latency of one 64-sample batch request at a time. Target: p99 < 50 ms.
(d) Samples/s when each request carries one sample, 256 in flight, on the same server in the same
    run as (b). Target: at least a quarter of (b).
(e) repetition on malformed box lists: version 2's linear repair vs json-repair (bench/repair.py).
(f) One client sending 4,096-sample batches over 1 and 2 keep-alive connections, against 1 and 2
    workers, with and without the host's scoring pool, all in the same run: 5 repetitions of 8
    requests each, the services taking turns request by request with one connection
    (bench/http.single_client_scaling). Target: 2 workers >= 1.7x one worker alone, in every
    repetition; the ratios are printed one by one. ``--only scaling`` runs this part alone
    (``make bench-scaling``: its JSON kept under docs/bench-runs).
Prints a table and writes bench/results.json (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from bench import http, reference
from bench import repair as repair_bench
from services.reward_api.local import LocalService

RESULTS = Path(__file__).with_name("results.json")


def machine() -> dict:
    """What the numbers were measured on, written with them."""
    return {"cpus": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def reference_rate(samples: list[dict]) -> dict:
    start = time.perf_counter()
    reference.score_samples(samples)
    seconds = time.perf_counter() - start
    return {"samples_per_s": len(samples) / seconds, "samples": len(samples), "seconds": seconds}


def engine_rate(samples: list[dict], batch_size: int = 64) -> dict:
    """The engine alone, in this process, one core: what the HTTP numbers are bounded by."""
    from services.reward_api.engine.scoring import score_batch

    start = time.perf_counter()
    for i in range(0, len(samples), batch_size):
        score_batch(samples[i:i + batch_size], http.ALL_REWARDS, None, False)
    seconds = time.perf_counter() - start
    return {"samples_per_s": len(samples) / seconds, "ms_per_batch": 1000 * seconds * batch_size / len(samples)}


def ap_rate(n_cases: int) -> dict:
    from bench import ap  # written beside this file; its absence is a failure, not a skip

    return ap.run(n_cases=n_cases, seed=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument("--only", choices=["scaling"], help="run only this part")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    results = {"machine": machine()}
    if args.only == "scaling":
        results["scaling"] = scaling(args.quick)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print_scaling(results["scaling"])
        print(f"(written to {args.out})")
        return 0
    samples = http.synthetic_samples(64 * 32, seed=0)
    results["ap"] = ap_rate(int(2000 * scale))
    results["reference"] = reference_rate(samples[: int(640 * scale)])
    results["engine"] = engine_rate(samples[: int(1280 * scale)])
    results["repair"] = repair_bench.run(repeats=2 if args.quick else 5)
    # Default settings: the admission budgets need no raising for either load.
    with LocalService.start(workers=2, env={"REWARD_API_LOG_LEVEL": "warning"}) as server:
        results["http"] = http.throughput(server, samples, n_requests=int(300 * scale))
        results["per_sample"] = http.per_sample_throughput(server, samples, n_requests=int(8000 * scale))
        results["latency"] = http.latency(server, samples, n_requests=int(300 * scale))
    results["per_sample_vs_batched"] = results["per_sample"]["samples_per_s"] / results["http"]["samples_per_s"]
    results["speedup_http_vs_reference"] = results["http"]["samples_per_s"] / results["reference"]["samples_per_s"]
    results["scaling"] = scaling(args.quick)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print_scaling(results["scaling"])
    print(f"(written to {args.out})")
    return 0


def scaling(quick: bool) -> dict:
    samples = http.synthetic_samples(4096, seed=1)
    return http.single_client_scaling(samples, repeats=2 if quick else 5, requests_per_run=2 if quick else 8)


def print_scaling(r: dict) -> None:
    print(f"\none client, {r['batch_size']}-sample batches, all seven rewards, {r['repeats']} repetitions of "
          f"{r['requests_per_run']} requests (samples/s min / median; x = against '{http.BASELINE}' in the same "
          f"repetition, min / median; cores the service's processes used, min / median):")
    for name, by in r["services"].items():
        cells = []
        for key, rates in by.items():
            if key == "vs_baseline":
                continue
            ratio, used = by["vs_baseline"][key], rates["runs_cores_used"]
            cells.append(f"{key.replace('_', ' ')}: {rates['min']:,.0f} / {rates['median']:,.0f} "
                         f"({ratio['min']:.2f}x / {ratio['median']:.2f}x; "
                         f"cores {min(used):.2f} / {statistics.median(used):.2f})")
        print(f"  {name:<20} " + "   ".join(cells))
    target = r["target"]
    print(f"'{target['service']}' against '{target['baseline']}', repetition by repetition "
          f"(target: at least {target['ratio']}x in every one):")
    by = r["services"][target["service"]]
    for key, ratios in by["vs_baseline"].items():
        others = by[key]["runs_other_cores"]
        print(f"  {key.replace('_', ' ')}: " + " ".join(f"{x:.2f}" for x in ratios["runs"])
              + f"   (min {ratios['min']:.2f}, median {ratios['median']:.2f}; cores other processes used: "
              + " ".join(f"{x:.2f}" for x in others) + ")")
    print(f"  every repetition at least {target['ratio']}x: {'yes' if target['met_in_every_repetition'] else 'NO'}")


def print_table(r: dict) -> None:
    rows = [
        ("AP, ours (cases/s)", f"{r['ap']['ours_per_s']:,.0f}", ""),
        ("AP, pycocotools (cases/s)", f"{r['ap']['pycocotools_per_s']:,.0f}", ""),
        ("AP speedup", f"{r['ap']['speedup']:.1f}x", "target >= 40x"),
        ("7 rewards, reference in-process (samples/s)", f"{r['reference']['samples_per_s']:,.0f}", ""),
        ("7 rewards, engine in-process, 1 core (samples/s)", f"{r['engine']['samples_per_s']:,.0f}",
         f"{r['engine']['ms_per_batch']:.1f} ms per 64"),
        ("7 rewards, HTTP 2 workers, batch 64 (samples/s)", f"{r['http']['samples_per_s']:,.0f}",
         f"{r['http']['concurrency']} in flight"),
        ("HTTP vs reference", f"{r['speedup_http_vs_reference']:.1f}x", "target >= 25x"),
        ("7 rewards, HTTP 2 workers, 1 sample per request (samples/s)", f"{r['per_sample']['samples_per_s']:,.0f}",
         f"{r['per_sample']['concurrency']} in flight"),
        ("one-sample requests vs batched", f"{r['per_sample_vs_batched']:.2f}", "target >= 0.25"),
        ("latency p50, one 64-sample batch (ms)", f"{r['latency']['p50_ms']:.1f}", ""),
        ("latency p99, one 64-sample batch (ms)", f"{r['latency']['p99_ms']:.1f}", "target < 50 ms"),
    ] + repair_bench.rows(r["repair"])
    width = max(len(name) for name, _, _ in rows)
    print(f"{'measure':<{width}}  {'value':>10}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


if __name__ == "__main__":
    raise SystemExit(main())
