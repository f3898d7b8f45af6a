"""Under CI (env ``CI`` set and not false), a skipped test is a failed one.

Locally a test that needs a system tool skips with the reason when the tool is absent
(tests/support/tools.py). CI installs every such tool (deploy/ci-setup.sh), so there a skip means a
check that silently did not run: this plugin reports it as a failure, with the skip's reason.
Expected failures (xfail) are left alone. Loaded by tests/conftest.py.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _reason(longrepr: object) -> str:
    # A skip's longrepr is (path, line, "Skipped: reason"); anything else is printed as it is.
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _fail_the_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail") and in_ci():
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI (CI={os.environ['CI']}), where every test must run: {_reason(report.longrepr)}"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    _fail_the_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    _fail_the_skip(outcome.get_result())
