"""Fuzzer findings stay fixed, and every fuzz target still runs (a quick pass of each;
the long runs are `make fuzz`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.runner import CRASHERS, check_one, fuzz
from tests.fuzz.targets import TARGETS

FOUND = sorted(CRASHERS.glob("*/*.bin"))


@pytest.mark.parametrize("path", FOUND, ids=[f"{p.parent.name}/{p.name}" for p in FOUND])
def test_crasher_stays_fixed(path: Path) -> None:
    """Each file under tests/fuzz/crashers/<target>/ once broke that target."""
    exc = check_one(TARGETS[path.parent.name], path.read_bytes())
    assert exc is None, repr(exc)


@pytest.mark.parametrize("name", list(TARGETS))
def test_quick_fuzz(name: str) -> None:
    """A few dozen Hypothesis inputs and a few hundred mutations per parser."""
    count = 60 if name == "iso" else 300
    result = fuzz(TARGETS[name], count, hypothesis_share=0.1, rng_seed=14, save=False)
    assert result.tried == count
    assert not result.findings, "\n".join(tb for _, tb in result.findings.values())
