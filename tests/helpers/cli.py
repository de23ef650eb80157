"""Run the installer as a real subprocess, the way operators do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def repo_pythonpath(current: str | None = None) -> str:
    """PYTHONPATH with this checkout first, then the non-empty entries of `current`
    (the caller's value). An empty entry would mean the child's working directory,
    from which any `yaml.py` or `argparse.py` lying there would be imported."""
    return os.pathsep.join([str(REPO), *(p for p in (current or "").split(os.pathsep) if p)])


def run_cli(
    *args: str | os.PathLike[str],
    input: bytes | None = None,
    stdin: int | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    stdout: int | None = subprocess.PIPE,
    timeout: float = 600,
    wrapper: Sequence[str] = (),
    preexec_fn: Callable[[], object] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`python -P -m nestos_inst ARGS` with this checkout first on the path (`wrapper`:
    a command that runs it, e.g. in a namespace of its own; `preexec_fn`: a limit to
    set in the child, e.g. hostile.cap_memory). `-P`: as for the installed command,
    the working directory (`cwd`, often a test's scratch dir) is not on sys.path."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = repo_pythonpath(full_env.get("PYTHONPATH"))
    full_env.setdefault("LC_ALL", "C")
    if env:
        full_env.update(env)
    return subprocess.run(
        [*wrapper, sys.executable, "-P", "-m", "nestos_inst", *(os.fspath(a) for a in args)],
        input=input,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
        preexec_fn=preexec_fn,
        check=False,
    )


def default_signal_actions() -> None:
    """In a child before exec: the signals a test sends get their default action, even
    if the test run itself was started with them ignored (`cmd &` ignores SIGINT)."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)


def interrupt_cli(
    *args: str | os.PathLike[str],
    signum: int,
    env: dict[str, str] | None = None,
    when: bytes = b"Read disk",
    delay: float = 0.3,
    timeout: float = 60,
) -> tuple[int, str]:
    """Run the CLI in its own session, send `signum` to the whole group (as Ctrl-C or
    systemd would, gpg included) once `when` shows on stderr; (returncode, stderr)."""
    import signal
    import time

    full_env = dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C")
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "nestos_inst", *(os.fspath(a) for a in args)],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=default_signal_actions,  # noqa: PLW1509 - signal() only, before exec
    )
    seen = b""
    try:
        assert proc.stderr is not None
        while when not in seen:
            line = proc.stderr.readline()
            assert line, seen.decode()
            seen += line
        time.sleep(delay)
        os.killpg(proc.pid, signum)
        _, rest = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, (seen + rest).decode()
