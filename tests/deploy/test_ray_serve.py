"""The Ray Serve tests (tests/deploy/ray_serve_scenarios.py: a real two-node Ray cluster, Serve's
`serve run`, scale-up, summed /metrics, a replica killed under load) run in a network namespace that
this test makes, with only loopback: Ray registers its nodes under the host's interface address and
its daemons listen on every interface, so outside such a namespace the run would not stay on
127.0.0.1. The scenarios run as one pytest subprocess there (``unshare -n``, or ``unshare -rn`` when
not root), with this run's environment (CI included); this test passes only if every one of them ran
and passed.
"""

from __future__ import annotations

import ast
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tools import unavailable

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (extra `serve`: make install)")

from services.reward_api.local_ray import REPO_ROOT, NoNetworkNamespace, in_own_network  # noqa: E402

SCENARIOS = Path(__file__).with_name("ray_serve_scenarios.py")
TIMEOUT = 420  # the scenarios take about a minute; their own per-test limit is 300 s


def scenario_names() -> list[str]:
    tree = ast.parse(SCENARIOS.read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def outcome_counts(summary: str) -> dict[str, int]:
    """pytest's last line ("5 passed, 1 skipped in 50.2s"): outcome -> count."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", summary)}


@pytest.mark.timeout(TIMEOUT + 30)
def test_every_ray_serve_scenario_passes_in_a_network_namespace_of_its_own():
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(SCENARIOS.relative_to(REPO_ROOT))]
    try:
        command = in_own_network(argv)
    except NoNetworkNamespace as reason:
        unavailable("a network namespace of our own for the Ray cluster", str(reason))
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                              timeout=TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired as late:
        output = (late.stdout or b"").decode(errors="replace") + (late.stderr or b"").decode(errors="replace")
        raise AssertionError(f"the scenarios ran past {TIMEOUT} s:\n{output[-12000:]}") from None
    output = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    counts = outcome_counts(lines[-1] if lines else "")
    skips = [line for line in lines if line.startswith("SKIPPED")]
    if skips and done.returncode == 0 and not counts.get("failed"):  # a tool missing inside (promtool): say which
        unavailable("a tool the Ray Serve scenarios need", "; ".join(skips))
    assert done.returncode == 0, f"the scenarios exited {done.returncode}:\n{output[-12000:]}"
    assert counts == {"passed": len(scenario_names())}, f"expected {scenario_names()} to pass:\n{output[-12000:]}"


class _Unreachable:
    """A handle whose deployment is gone: every call fails as Serve's would."""

    class _Method:
        def remote(self, *args):
            async def fail():
                raise RuntimeError("Deployment 'MetricsTotals' in application 'reward-api' does not exist")

            return fail()

    add = exposition = _Method()


def test_metrics_answer_503_with_the_reason_when_the_totals_are_unreachable():
    from services.reward_api import metrics
    from services.reward_api.serve import MetricsReporter

    metrics.observe_request("/v1/score", 200, 0.01)  # something to report
    reporter = MetricsReporter(_Unreachable())
    with pytest.raises(metrics.MetricsOff, match="MetricsTotals of this Serve application cannot be reached"):
        asyncio.run(reporter.exposition())
    assert reporter.sent == {}, "a report that did not go through is sent again next time"
