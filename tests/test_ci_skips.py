"""The CI rule: a test that skips (a missing tool) passes as a skip locally and fails under CI."""

from __future__ import annotations

import pytest

SUITE = """
import pytest

def test_needs_a_tool():
    pytest.skip("`promtool` is not available (apt-get install prometheus)")

@pytest.mark.skipif(True, reason="no docker engine")
def test_marked():
    pass

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False

def test_runs():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makepyfile(test_module_skip="import pytest\npytest.importorskip('no_such_module_here')\n")
    return pytester


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_outside_ci_a_skip_is_a_skip(suite, monkeypatch, value):
    monkeypatch.setenv("CI", value)
    result = suite.runpytest("-p", "tests.support.ci_skips", "-rs")
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    result.stdout.fnmatch_lines(["*promtool* is not available*"])


def test_under_ci_a_skip_fails_with_its_reason(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "tests.support.ci_skips", "test_suite.py")
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)  # skipif acts in setup: an error
    result.stdout.fnmatch_lines(
        [
            "*skipped under CI (CI=true), where every test must run: `promtool` is not available*",
            "*skipped under CI (CI=true), where every test must run: no docker engine*",
        ]
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_under_ci_a_module_skipped_at_import_is_a_collection_error(suite, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest("-p", "tests.support.ci_skips")
    result.assert_outcomes(errors=1)  # and pytest stops: nothing may pass silently without it
    result.stdout.fnmatch_lines(["*skipped under CI*could not import 'no_such_module_here'*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED
