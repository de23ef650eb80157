"""End-to-end report: `build/e2e-report.json`, one entry per scenario.

A test names its scenario with `@pytest.mark.scenario("name")` (or a
`pytest.param(..., marks=pytest.mark.scenario("name"))`). The entry is
`{"name", "passed", "seconds"}`; seconds is the test's setup + call + teardown time,
unless the test records its own measure (scenarios that share parallel boots) with
`request.node.user_properties.append(("scenario_seconds", s))`, and may add a
JSON-able `("scenario_details", {...})` (fleet-4's per-VM figures). Skipped scenarios are
reported with `"passed": false, "skipped": true`. Any test module can use it. Entries of
scenarios not run this time (pytest -k) are kept from the previous report.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.vm import stop_all

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "build" / "e2e-report.json"

_results: dict[str, dict[str, Any]] = {}
_order: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "scenario(name): end-to-end scenario name for build/e2e-report.json"
    )


def _scenario(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("scenario")
    return str(mark.args[0]) if mark and mark.args else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    rep: pytest.TestReport = outcome.get_result()
    name = _scenario(item)
    if name is None:
        return
    entry = _results.get(name)
    if entry is None:
        entry = {"name": name, "passed": True, "seconds": 0.0}
        _results[name] = entry
        _order.append(name)
    entry["seconds"] += rep.duration
    if rep.skipped:
        entry["passed"] = False
        entry["skipped"] = True
    elif rep.failed:
        entry["passed"] = False
    if rep.when == "teardown":
        for key, value in item.user_properties:
            if key == "scenario_seconds":
                entry["seconds"] = float(str(value))
            elif key == "scenario_details":
                entry["details"] = value
        entry["seconds"] = round(entry["seconds"], 1)


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Ctrl-C: end every running QEMU now, before fixtures are torn down (scenario
    pools wait for their worker threads, which return once their QEMU is gone)."""
    stop_all()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()  # nothing a failed or interrupted run started outlives it
    if not _results:
        return
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    # A run of some scenarios (pytest -k) updates their entries and keeps the others
    # from the previous report; `make e2e` runs them all.
    entries: list[dict[str, Any]] = []
    try:
        old = json.loads(REPORT.read_text())
        if isinstance(old, list):
            entries = [e for e in old if isinstance(e, dict) and e.get("name") not in _results]
    except (OSError, ValueError):
        pass
    entries += [_results[n] for n in _order]
    tmp = REPORT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=2) + "\n")
    tmp.replace(REPORT)
