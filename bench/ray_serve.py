"""``python -m bench.ray_serve``: the Ray Serve path against plain uvicorn, side by side in one run.

A local Ray cluster of two nodes of one CPU each (services/reward_api/local_ray.py, the CI test's) runs
the whole time, so its daemons weigh on both sides alike. In turn, each measured the same way
(bench/http.py):

* throughput: samples/s of all seven rewards, 64-sample batches, 6 requests in flight;
* overhead: p50/p99 of one 64-sample request at a time (what Serve's proxy hop adds to a call);

for uvicorn with 1 and 2 workers and Serve with 1 and 2 replicas (autoscaling pinned: min = max).
Prints a table and writes bench/results-ray-serve.json.

The whole bench runs in a network namespace of its own with only loopback (it re-runs itself there:
local_ray.in_own_network, ``unshare -n``, or ``unshare -rn`` when not root), as the test does: there
every Ray node is 127.0.0.1 and nothing the cluster listens on is reachable from outside.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import http
from bench.__main__ import machine
from services.reward_api.local import LocalService
from services.reward_api.local_ray import REPO_ROOT, LocalRayCluster, NoNetworkNamespace, in_own_network, only_loopback

RESULTS = Path(__file__).with_name("results-ray-serve.json")


@dataclass
class Ingress:
    """What bench/http.py needs of a server: its URL and headers."""

    url: str

    def headers(self) -> dict[str, str]:
        return {}


def measure(server, samples: list[dict], n_requests: int, n_latency: int) -> dict:
    return {
        "throughput": http.throughput(server, samples, n_requests=n_requests),
        "latency": http.latency(server, samples, n_requests=n_latency),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per throughput run (default 300)")
    parser.add_argument("--latency-requests", type=int, default=200, help="requests per latency run (default 200)")
    args = parser.parse_args(argv)
    if not only_loopback():
        return in_a_namespace_of_its_own(sys.argv[1:] if argv is None else argv)
    import ray

    samples = http.synthetic_samples(4096)
    results: dict = {"machine": machine(), "runs": {}}
    env = {"REWARD_API_LOG_LEVEL": "warning"}
    with LocalRayCluster(nodes=2, cpus_per_node=1) as cluster:
        cluster.start()
        ray.init(address=cluster.address, namespace="serve", log_to_driver=False)
        try:
            cluster.wait_for_nodes()
            for n in (1, 2):
                with LocalService.start(workers=n, env=env) as plain:
                    results["runs"][f"uvicorn, {n} worker(s)"] = measure(
                        plain, samples, args.requests, args.latency_requests
                    )
                cluster.deploy(cluster.local_config(min_replicas=n, initial_replicas=n, max_replicas=n))
                results["runs"][f"Ray Serve, {n} replica(s)"] = measure(
                    Ingress(cluster.url), samples, args.requests, args.latency_requests
                )
        finally:
            ray.shutdown()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'':24} {'samples/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for name, run in results["runs"].items():
        print(f"{name:24} {run['throughput']['samples_per_s']:10.0f} "
              f"{run['latency']['p50_ms']:8.1f} {run['latency']['p99_ms']:8.1f}")  # fmt: skip
    print(f"machine: {results['machine']}; written to {RESULTS}")
    return 0


def in_a_namespace_of_its_own(argv: list[str]) -> int:
    """This bench again, in a new network namespace with only loopback; its exit status."""
    try:
        command = in_own_network([sys.executable, "-m", "bench.ray_serve", *argv])
    except NoNetworkNamespace as reason:
        print(f"python -m bench.ray_serve runs its Ray cluster in a network namespace of its own: {reason}",
              file=sys.stderr)  # fmt: skip
        return 2
    return subprocess.run(command, cwd=REPO_ROOT).returncode


if __name__ == "__main__":
    raise SystemExit(main())
