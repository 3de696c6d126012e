"""A pytest plugin for the mutation runner: appends each failure to the file $MUTATION_FAILURES.

One JSON object a line: the node id, the phase (collect, setup, call, teardown) and the
first line of the error. The runner loads it with `-p tests.mutation.record`.
"""

from __future__ import annotations

import json
import os

import pytest

FAILURES_ENV = "MUTATION_FAILURES"


def _record(nodeid: str, when: str, longrepr: object) -> None:
    target = os.environ.get(FAILURES_ENV)
    if not target:
        return
    crash = getattr(longrepr, "reprcrash", None)
    message = str(getattr(crash, "message", None) or longrepr or "")
    line = json.dumps({"nodeid": nodeid, "when": when, "message": message.strip().splitlines()[:1]})
    with open(target, "a", encoding="utf-8") as out:
        out.write(line + "\n")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Record a test that failed in setup, call or teardown."""
    if report.failed:
        _record(report.nodeid, report.when, report.longrepr)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Record a module that could not be collected."""
    if report.failed:
        _record(report.nodeid, "collect", report.longrepr)
