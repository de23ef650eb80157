"""Run the installer as a real subprocess, the way operators do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(
    *args: str | os.PathLike[str],
    input: bytes | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    timeout: float = 600,
) -> subprocess.CompletedProcess[bytes]:
    """`python -m nestos_inst ARGS` with this checkout first on the path."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.setdefault("LC_ALL", "C")
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "nestos_inst", *(os.fspath(a) for a in args)],
        input=input,
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        check=False,
    )
