"""Side by side: the service without (/tmp/before-protocol: HEAD with HeaderLimitedH11Protocol.connection_made
removed) and with the one-write protocol (/work/main), 1-sample /v1/score
requests, 64 concurrent keep-alive connections, alternating 8 s rounds."""
import asyncio, os, subprocess, sys, time, json
import httpx
sys.path.insert(0, "/work/main")
from bench.http import synthetic_samples
from services.reward_api.local import free_port

def start(tree):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARD_API_")}
    env.update(OMP_NUM_THREADS="1", REWARD_API_LOG_LEVEL="warning", REWARD_API_WORKERS="1")
    p = subprocess.Popen([sys.executable, "-m", "services.reward_api", "--port", str(port)], cwd=tree, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/readyz").status_code == 200: return p, url
        except httpx.HTTPError: pass
        time.sleep(0.1)
    raise SystemExit("no start " + tree)

samples = synthetic_samples(512)
bodies = [json.dumps({"samples": [s], "rewards": ["format", "ap"]}).encode() for s in samples]

async def load(url, seconds=8.0, concurrency=64):
    done = 0; stop = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=concurrency), timeout=30) as c:
        async def worker(i):
            nonlocal done
            k = i
            while time.perf_counter() < stop:
                r = await c.post("/v1/score", content=bodies[k % len(bodies)], headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
                done += 1; k += concurrency
        t = time.perf_counter(); await asyncio.gather(*[worker(i) for i in range(concurrency)])
        return done / (time.perf_counter() - t)

procs = {name: start(tree) for name, tree in (("before", "/tmp/before-protocol"), ("after", "/work/main"))}
try:
    rates = {"before": [], "after": []}
    for r in range(6):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            rates[name].append(round(asyncio.run(load(procs[name][1])), 1))
    print(json.dumps(rates))
finally:
    for p, _ in procs.values():
        os.killpg(p.pid, 15)
