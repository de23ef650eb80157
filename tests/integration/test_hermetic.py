"""The suite's signal tests pass when pytest itself starts with SIGINT ignored, as any
`cmd &` in a non-interactive shell (CI scripts, nohup, a service) starts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import REPO, repo_pythonpath, run_cli

SIGNAL_TESTS = [
    "tests/unit/test_download_cli.py::test_signal_mid_transfer_leaves_nothing",
    "tests/unit/test_verify.py::test_gpg_killed_mid_stream_fails_instead_of_hanging",
]


def test_signal_tests_pass_with_sigint_ignored() -> None:
    """Runs those tests in a child pytest whose SIGINT is ignored before exec (the
    disposition `bash -c 'trap "" INT; pytest ...'` would give it)."""
    import signal

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SIGNAL_TESTS],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        preexec_fn=ignore_sigint,
        capture_output=True,
        timeout=600,
        check=False,
    )
    out = proc.stdout.decode(errors="replace")
    assert proc.returncode == 0, out + proc.stderr.decode(errors="replace")
    assert " passed" in out and "failed" not in out, out


@pytest.mark.parametrize("caller", [None, "", f"{os.pathsep}/nonexistent{os.pathsep}{os.pathsep}"])
def test_run_cli_keeps_its_working_directory_off_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caller: str | None
) -> None:
    """Modules lying in the child's working directory (often a test's scratch dir)
    must not replace the installer's own package or the standard library: run_cli
    puts no empty entry into PYTHONPATH, whatever the caller's value, and runs
    `python -P` (no working directory in front either)."""
    if caller is None:
        monkeypatch.delenv("PYTHONPATH", raising=False)
    else:
        monkeypatch.setenv("PYTHONPATH", caller)
    shadow = 'raise SystemExit("shadowed by the working directory")\n'
    (tmp_path / "argparse.py").write_text(shadow)
    (tmp_path / "nestos_inst").mkdir()
    (tmp_path / "nestos_inst" / "__init__.py").write_text(shadow)
    proc = run_cli("--version", cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert proc.stdout.startswith(b"nestos-installer ")
    assert "" not in repo_pythonpath(caller).split(os.pathsep)
    assert repo_pythonpath(caller).split(os.pathsep)[0] == str(REPO)
