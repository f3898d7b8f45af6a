"""The reward service as a Ray Serve application: many hosts, on the Ray cluster a trainer already runs.

    serve run deploy/ray/reward-api.yaml          # or: serve deploy deploy/ray/reward-api.yaml

Every replica runs the app of ``create_app`` itself (settings from ``REWARD_API_*`` in the replica's
environment: the config's ``runtime_env``), behind Serve's proxy: one ingress URL whose ``/v1/score``,
``/v1/openrlhf``... are the uvicorn service's. How many replicas, where, and how they scale is Serve's
configuration (deploy/ray/reward-api.yaml), not code.

Telemetry: a replica counts in its own process. Every ``REPORT_SECONDS`` it sends what it counted since
its last report to ``MetricsTotals``, a one-replica deployment of the same application that adds the
reports up (metrics_totals.py); ``GET /metrics`` on the ingress, whichever replica answers it, first
reports its own counts and then answers the sums: one scrape target, the series of one uvicorn service.
A replica that dies loses at most its last ``REPORT_SECONDS`` of counts; if ``MetricsTotals`` itself is
restarted the counters start again from 0, which Prometheus's ``rate()``/``increase()`` treat as a reset.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from ray import serve
from ray.serve.handle import DeploymentHandle

from . import metrics
from .app import create_app
from .metrics_totals import Counts, Families, Totals, difference, read_counts
from .settings import Settings

log = logging.getLogger("reward_api")

INGRESS = "RewardService"  # the deployments' names, as deploy/ray/reward-api.yaml configures them
TOTALS = "MetricsTotals"  # (each replica's app finds this one by name)
REPORT_SECONDS = 1.0


class _MetricsTotals:
    """The sums of every replica's metrics (one replica: two would each hold half)."""

    def __init__(self) -> None:
        self.totals = Totals()

    # Coroutines: Serve runs them on the replica's event loop, one at a time, so a report never
    # changes the sums while a scrape reads them (plain methods could run in a thread pool).
    async def add(self, families: Families, delta: Counts) -> None:
        self.totals.add(families, delta)

    async def exposition(self) -> bytes:
        return self.totals.exposition()


class MetricsReporter:
    """Sends this replica's new counts to ``MetricsTotals``: every ``REPORT_SECONDS``, and before an
    answer to /metrics (so the replica answering a scrape is never behind)."""

    def __init__(self, totals: DeploymentHandle) -> None:
        self.totals = totals
        self.sent: Counts = {}
        self.lock = asyncio.Lock()  # a scrape's report and the periodic one must not both send one delta
        self.task: asyncio.Task | None = None

    async def report(self) -> None:
        async with self.lock:
            families, now = read_counts()
            delta = difference(now, self.sent)
            if delta:
                await self.totals.add.remote(families, delta)
                self.sent = now  # only once the totals have it: a failed report is sent again next time

    async def report_forever(self) -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            try:
                await self.report()
            except Exception as exc:  # the totals restarting: counts stay here until a report goes through
                log.warning("metrics report to %s failed (sent again next time): %s", TOTALS, exc)

    async def exposition(self) -> tuple[bytes, str]:
        try:
            await self.report()
            return await self.totals.exposition.remote(), CONTENT_TYPE_LATEST
        except Exception as exc:
            reason = f"metrics are off: {TOTALS} of this Serve application cannot be reached: {exc}"
            raise metrics.MetricsOff(reason) from exc


def build_app() -> FastAPI:
    """The service's app on one replica, its /metrics answered with the sums over every replica."""
    app = create_app(Settings.from_env())
    context = serve.get_replica_context()
    reporter = MetricsReporter(serve.get_deployment_handle(TOTALS, app_name=context.app_name))
    app.state.exposition = reporter.exposition
    # Serve builds the app inside the replica's event loop: the reporter runs there, with the requests.
    reporter.task = asyncio.get_running_loop().create_task(reporter.report_forever())
    app.state.metrics_reporter = reporter
    return app


class _RewardService:
    """The ingress. Replicas, resources and autoscaling: deploy/ray/reward-api.yaml."""

    def __init__(self, totals: DeploymentHandle) -> None:
        # Bound only so that Serve deploys MetricsTotals with this application; build_app finds it by name.
        self.totals = totals


# Applied as calls, not as class decorators, so that type checkers see Serve's Deployment objects.
MetricsTotals = serve.deployment(name=TOTALS, num_replicas=1, ray_actor_options={"num_cpus": 0})(_MetricsTotals)
RewardService = serve.deployment(name=INGRESS, ray_actor_options={"num_cpus": 1})(
    serve.ingress(build_app)(_RewardService)
)

# The application: `serve run services.reward_api.serve:app`, or the import_path of deploy/ray/reward-api.yaml.
app = RewardService.bind(MetricsTotals.bind())
