"""HTTP benchmarks: throughput of /v1/score under concurrent load, and single-batch latency.

The server is the real one (``python -m services.reward_api``) on 127.0.0.1, started with
`services.reward_api.local`. Request bodies are encoded once up front and answers are only checked for a 200,
so the load generator takes as little as possible of the CPU the server needs.
"""

from __future__ import annotations

import asyncio
import os
import random
import resource
import statistics
import time
from pathlib import Path

import httpx
import orjson

from services.reward_api.local import LocalService

ALL_REWARDS = ["format", "ap", "ap50", "od_length", "weighted_sum", "repetition", "cosine"]
LABELS = ["person", "car", "dog", "cat", "chair", "bottle", "bicycle"]


def _box(rng: random.Random) -> list[int]:
    x1, y1 = rng.randint(0, 500), rng.randint(0, 400)
    return [x1, y1, x1 + rng.randint(8, 300), y1 + rng.randint(8, 250)]


def _jitter(box: list[int], rng: random.Random) -> list[int]:
    return [v + rng.randint(-6, 6) for v in box[:2]] + [v + rng.randint(-6, 6) for v in box[2:]]


def _fence(items: list[dict]) -> str:
    return "```json\n" + orjson.dumps(items, option=orjson.OPT_INDENT_2).decode() + "\n```"


GENERATIONS_PER_PROMPT = 8  # the research's GRPO recipe: a 64-sample batch is 8 prompts x 8 generations


def synthetic_completion(gt: list[dict], rng: random.Random) -> dict:
    """A realistic completion for ``gt``: think + answer with 1-15 boxes, some wrong labels, some malformed."""
    pred = [{"bbox_2d": _jitter(g["bbox_2d"], rng), "label": g["label"]} for g in gt if rng.random() < 0.85]
    pred += [{"bbox_2d": _box(rng), "label": rng.choice(LABELS)} for _ in range(rng.randint(0, 4))]
    for p in pred:
        if rng.random() < 0.1:
            p["label"] = rng.choice(LABELS)  # sometimes wrong
    if rng.random() < 0.1:
        pred += pred[: rng.randint(1, max(1, len(pred)))]  # repeated detections (the repetition reward)
    pred = pred[:15] or [{"bbox_2d": _box(rng), "label": rng.choice(LABELS)}]
    think = " ".join(rng.choice(["I see", "a", "the", "object", "near", "left", "right", "edge"])
                     for _ in range(rng.randint(10, 80)))
    answer = _fence(pred)
    kind = rng.random()
    if kind < 0.05:
        answer = answer.replace("]", "", 1)  # broken JSON
    elif kind < 0.08:
        answer = answer.replace("```json", "")  # no fence
    completion = f"<think>{think}</think>\n<answer>{answer}</answer>"
    if 0.08 <= kind < 0.11:
        completion = completion.replace("</answer>", "")  # no answer block
    return {"completion": completion, "solution": f"<answer>{_fence(gt)}</answer>",
            "completion_tokens": len(completion) // 4}


def synthetic_samples(n: int, seed: int = 0) -> list[dict]:
    """``n`` samples shaped like GRPO batches: groups of GENERATIONS_PER_PROMPT completions per ground truth."""
    rng = random.Random(seed)
    samples: list[dict] = []
    while len(samples) < n:
        gt = [{"bbox_2d": _box(rng), "label": rng.choice(LABELS)} for _ in range(rng.randint(1, 10))]
        samples += [synthetic_completion(gt, rng) for _ in range(GENERATIONS_PER_PROMPT)]
    return samples[:n]


def score_bodies(samples: list[dict], batch_size: int) -> list[bytes]:
    return [orjson.dumps({"samples": samples[i:i + batch_size], "rewards": ALL_REWARDS})
            for i in range(0, len(samples) - batch_size + 1, batch_size)]


async def _load(url: str, bodies: list[bytes], concurrency: int, n_requests: int, headers: dict) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    next_index = 0
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60.0, headers=headers) as client:

        async def worker(count: int) -> None:
            nonlocal next_index
            while next_index < count:
                body = bodies[next_index % len(bodies)]
                next_index += 1
                answer = await client.post("/v1/score", content=body,
                                           headers={"content-type": "application/json"})
                if answer.status_code != 200:
                    raise RuntimeError(f"/v1/score answered {answer.status_code}: {answer.text[:300]}")

        await asyncio.gather(*(worker(2 * concurrency) for _ in range(concurrency)))  # warm connections
        next_index = 0
        start = time.perf_counter()
        await asyncio.gather(*(worker(n_requests) for _ in range(concurrency)))
        return time.perf_counter() - start


def throughput(server: LocalService, samples: list[dict], batch_size: int = 64, concurrency: int = 6,
               n_requests: int = 200) -> dict:
    """Samples/s of all seven rewards with ``concurrency`` requests in flight."""
    bodies = score_bodies(samples, batch_size)
    seconds = asyncio.run(_load(server.url, bodies, concurrency, n_requests, server.headers()))
    return {"samples_per_s": n_requests * batch_size / seconds, "requests": n_requests,
            "batch_size": batch_size, "concurrency": concurrency, "seconds": seconds}


async def _raw_load(port: int, requests: list[bytes], concurrency: int, n_requests: int) -> float:
    """``n_requests`` over ``concurrency`` keep-alive connections, each request written as raw
    HTTP/1.1 bytes and each answer read by its Content-Length: with hundreds in flight an HTTP
    client library would take more of the 2 shared cores than the server, and measure itself."""
    next_index = 0

    async def connection(count: int) -> None:
        nonlocal next_index
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_index < count:
                request = requests[next_index % len(requests)]
                next_index += 1
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                body = await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    status_line = head.split(b"\r\n", 1)[0]
                    raise RuntimeError(f"answered {status_line!r}: {body[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection(concurrency) for _ in range(concurrency)))  # open and warm
    next_index = 0
    start = time.perf_counter()
    await asyncio.gather(*(connection(n_requests) for _ in range(concurrency)))
    return time.perf_counter() - start


def per_sample_throughput(server: LocalService, samples: list[dict], concurrency: int = 256,
                          n_requests: int = 6000) -> dict:
    """Samples/s when every request carries one sample (OpenRLHF >= 0.10, slime and verl's per-sample
    managers without our coalescing adapters), all seven rewards, ``concurrency`` requests in flight."""
    headers = "".join(f"{k}: {v}\r\n" for k, v in server.headers().items())
    requests = []
    for body in score_bodies(samples, 1):
        requests.append((f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         f"{headers}Content-Length: {len(body)}\r\n\r\n").encode() + body)
    seconds = asyncio.run(_raw_load(server.port, requests, concurrency, n_requests))
    return {"samples_per_s": n_requests / seconds, "requests": n_requests, "batch_size": 1,
            "concurrency": concurrency, "seconds": seconds}


def latency(server: LocalService, samples: list[dict], batch_size: int = 64, n_requests: int = 300) -> dict:
    """p50/p99 of one batch request at a time (keep-alive connection, as a trainer would hold)."""
    body = score_bodies(samples, batch_size)[0]
    times = []
    with httpx.Client(base_url=server.url, timeout=60.0, headers=server.headers()) as client:
        for i in range(n_requests + 20):
            start = time.perf_counter()
            answer = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
            elapsed = time.perf_counter() - start
            if answer.status_code != 200:
                raise RuntimeError(f"/v1/score answered {answer.status_code}: {answer.text[:300]}")
            if i >= 20:  # the first few warm caches and the connection
                times.append(elapsed)
    times.sort()
    return {"p50_ms": 1000 * times[len(times) // 2], "p99_ms": 1000 * times[int(len(times) * 0.99) - 1],
            "requests": n_requests, "batch_size": batch_size}


# ---------------------------------------------------------------- one client, every core

# The services compared side by side by `single_client_scaling`: today's design (each worker scores
# its own requests, on one core) and the host's scoring pool (services/reward_api/scoring_pool.py).
# The baseline and the target come first: every repetition measures them next to each other.
SCALING_SERVICES = {
    "1 worker, no pool": {"workers": 1, "env": {"REWARD_API_SCORING_PROCESSES": "0"}},
    "2 workers + pool": {"workers": 2, "env": {}},
    "2 workers, no pool": {"workers": 2, "env": {"REWARD_API_SCORING_PROCESSES": "0"}},
    "1 worker + pool": {"workers": 1, "env": {}},
}
BASELINE = "1 worker, no pool"
TARGET = "2 workers + pool"  # issue 15: at least TARGET_RATIO x BASELINE, in every repetition
TARGET_RATIO = 1.7


async def _in_turns(
    services: list[LocalService], body: bytes, warm_body: bytes, connections: int, per_turn: int, turns: int
) -> list[tuple[float, dict[str, float]]]:
    """Per service, the seconds it took and the CPU seconds used (`cpu_seconds`) while one client
    holding ``connections`` fresh keep-alive connections to it sent ``per_turn`` requests on each,
    one after another (a trainer's shape), ``turns`` times. The services take turns, in the
    opposite order every other turn, so all of them are measured over the same stretch of time
    (this machine's speed drifts by several percent within seconds). Fresh connections per call:
    each call draws again which worker accepts them."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    json_headers = {"content-type": "application/json"}
    clients = [httpx.AsyncClient(base_url=s.url, limits=limits, timeout=300.0, headers=s.headers()) for s in services]

    async def send(client: httpx.AsyncClient, content: bytes, count: int) -> None:
        for _ in range(count):
            answer = await client.post("/v1/score", content=content, headers=json_headers)
            if answer.status_code != 200:
                raise RuntimeError(f"/v1/score answered {answer.status_code}: {answer.text[:300]}")

    seconds = [0.0] * len(services)
    used = [{"service": 0.0, "client": 0.0, "others": 0.0} for _ in services]
    try:
        for client in clients:  # open the connections, cheaply
            await asyncio.gather(*(send(client, warm_body, 1) for _ in range(connections)))
        for turn in range(turns):
            for i in range(len(services)) if turn % 2 == 0 else reversed(range(len(services))):
                before = cpu_seconds(services[i].process.pid)
                start = time.perf_counter()
                await asyncio.gather(*(send(clients[i], body, per_turn) for _ in range(connections)))
                seconds[i] += time.perf_counter() - start
                after = cpu_seconds(services[i].process.pid)
                for key in after:
                    used[i][key] += after[key] - before[key]
    finally:
        for client in clients:
            await client.aclose()
    return list(zip(seconds, used, strict=True))


def single_client_scaling(
    samples: list[dict],
    batch_size: int = 4096,
    connections: tuple[int, ...] = (1, 2),
    repeats: int = 5,
    requests_per_run: int = 8,
) -> dict:
    """Samples/s of one client sending ``batch_size``-sample batches (all seven rewards) over 1 or 2
    keep-alive connections, to each service of SCALING_SERVICES. All of them run at once, every
    worker of each warmed first with one such batch (`warm`). Each repetition measures every
    service with one number of connections, then with the other (in the opposite order every other
    repetition); ``requests_per_run`` requests each. With one connection the services take turns
    request by request (`_in_turns`), so a ratio compares the same seconds of the machine's time;
    with two, each sends its requests in one go, so that its connections run free, as a client's
    would. Each measurement also records the cores the service used (its processes' CPU seconds
    over the wall time), the client's (this process) and everything else's on the machine (other
    jobs, the kernel): a repetition starved of CPU shows as such."""
    body = orjson.dumps({"samples": samples[:batch_size], "rewards": ALL_REWARDS})
    warm_body = orjson.dumps({"samples": samples[:1], "rewards": ALL_REWARDS})
    names = list(SCALING_SERVICES)
    runs: dict[str, dict[int, list[float]]] = {name: {c: [] for c in connections} for name in names}
    cores: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in connections} for name in names}
    services: dict[str, LocalService] = {}
    try:
        for name, spec in SCALING_SERVICES.items():
            env = {"REWARD_API_LOG_LEVEL": "warning", **spec["env"]}
            services[name] = LocalService.start(workers=spec["workers"], env=env)
        for service in services.values():
            warm(service, body)
        for repetition in range(repeats):
            order = names if repetition % 2 == 0 else names[::-1]
            for c in connections if repetition % 2 == 0 else connections[::-1]:
                per_connection = max(1, requests_per_run // c)
                turns = per_connection if c == 1 else 1
                measured = asyncio.run(
                    _in_turns([services[n] for n in order], body, warm_body, c, per_connection // turns, turns)
                )
                for name, (seconds, used) in zip(order, measured, strict=True):
                    runs[name][c].append(batch_size * per_connection * c / seconds)
                    # /proc/stat and the processes' stat count ticks a little apart: never below 0.
                    cores[name][c].append({key: max(0.0, value / seconds) for key, value in used.items()})
    finally:
        for service in services.values():
            service.stop()
    results: dict = {
        "batch_size": batch_size,
        "repeats": repeats,
        "requests_per_run": requests_per_run,
        "load_average_after": os.getloadavg(),
        "services": {},
    }
    for name, by_connections in runs.items():
        results["services"][name] = {
            f"{c}_connections": {
                "runs_samples_per_s": rates,
                "min": min(rates),
                "median": statistics.median(rates),
                "max": max(rates),
                "runs_cores_used": [run["service"] for run in cores[name][c]],
                "runs_client_cores": [run["client"] for run in cores[name][c]],
                "runs_other_cores": [run["others"] for run in cores[name][c]],
            }
            for c, rates in by_connections.items()
        }
    for name in names:  # per repetition, against the baseline measured next to it
        results["services"][name]["vs_baseline"] = {
            f"{c}_connections": _ratios(runs[name][c], runs[BASELINE][c]) for c in connections
        }
    target = results["services"][TARGET]["vs_baseline"]
    results["target"] = {
        "service": TARGET,
        "baseline": BASELINE,
        "ratio": TARGET_RATIO,
        "met_in_every_repetition": all(min(r["runs"]) >= TARGET_RATIO for r in target.values()),
    }
    return results


def warm(service: LocalService, body: bytes, attempts: int = 100) -> None:
    """Every worker of ``service`` answers one ``body`` before anything is measured: a worker's first
    large batch costs it more (its heap grows, its caches fill), and would otherwise fall in
    whichever repetition first lands on it. Fresh connections until each worker (its pid, from
    /healthz) has had one; the scoring pool's processes get chunks of each."""
    warmed: set[int] = set()
    for _ in range(attempts):
        with httpx.Client(base_url=service.url, timeout=300.0, headers=service.headers()) as client:
            pid = client.get("/healthz").json()["pid"]
            if pid not in warmed:
                answer = client.post("/v1/score", content=body, headers={"content-type": "application/json"})
                if answer.status_code != 200:
                    raise RuntimeError(f"/v1/score answered {answer.status_code}: {answer.text[:300]}")
                warmed.add(pid)
        if len(warmed) == service.workers:
            return
    raise RuntimeError(f"only {len(warmed)} of {service.workers} workers answered {attempts} fresh connections")


def cpu_seconds(pgid: int) -> dict[str, float]:
    """CPU seconds used so far by the service (its process group: uvicorn's processes and the
    scoring pool), by this process (the client), and by everything else on the machine."""
    service = group_cpu_seconds(pgid)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client = usage.ru_utime + usage.ru_stime
    return {"service": service, "client": client, "others": machine_busy_seconds() - service - client}


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds used so far by the processes of a process group (a LocalService's: its uvicorn
    processes and scoring pool). Over a run, divided by its wall time, it says how many cores the
    service really had: on a shared machine, fewer than it asked for when other jobs hold them."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _ratios(rates: list[float], baseline: list[float]) -> dict:
    ratios = [r / b for r, b in zip(rates, baseline, strict=True)]
    return {"runs": ratios, "min": min(ratios), "median": statistics.median(ratios)}
