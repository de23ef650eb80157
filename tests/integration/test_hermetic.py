"""The suite's signal tests pass when pytest itself starts with SIGINT ignored, as any
`cmd &` in a non-interactive shell (CI scripts, nohup, a service) starts it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.cli import REPO

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
