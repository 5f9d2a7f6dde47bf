"""CI fails on a skip nobody agreed to: a test that silently stops running is a test lost.

Under `CI=true` (set by .ci/run) every skipped test must match an entry of ALLOWED_SKIPS
(an fnmatch pattern of the test id, with the reason it may skip on a CI machine); any other
skip turns the run red and is listed. Outside CI, skips stay skips (a developer machine
may lack slapd or root). tests/conftest.py exposes the two hooks below.
"""

from __future__ import annotations

import fnmatch
import os

import pytest

#: test id pattern -> why CI may skip it. Keep this short; each entry is a gap in CI.
ALLOWED_SKIPS: dict[str, str] = {
    "tests/test_deploy.py::test_helm_*":
        "helm is not packaged in Debian 12 and the chart test needs its own binary",
}

#: (test id, reason) of every skip of this session, in order.
SKIPPED: list[tuple[str, str]] = []


def unexpected(skips: list[tuple[str, str]],
               allowed: dict[str, str] = ALLOWED_SKIPS) -> list[tuple[str, str]]:
    """The (test id, reason) pairs of `skips` that no pattern of `allowed` covers."""
    return [(nodeid, reason) for nodeid, reason in skips
            if not any(fnmatch.fnmatchcase(nodeid, pattern) for pattern in allowed)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        SKIPPED.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") != "true" or hasattr(session.config, "workerinput"):
        return  # (a pytest-xdist worker: its reports reach the controller, which judges)
    bad = unexpected(SKIPPED)
    if not bad:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["", f"CI: {len(bad)} skipped test(s) not in ALLOWED_SKIPS "
             "(tests/skip_gate.py): make them run, or add them there with the reason"]
    lines += [f"  {nodeid}: {reason}" for nodeid, reason in bad]
    for line in lines:
        if reporter is not None:
            reporter.write_line(line, red=True)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
