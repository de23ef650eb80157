"""The only way this program starts other programs: argv lists, never a shell."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence

from .errors import CommandError

log = logging.getLogger(__name__)

Arg = str | os.PathLike[str]


def run(
    argv: Sequence[Arg],
    *,
    input: bytes | None = None,
    capture: bool = True,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run argv with LC_ALL=C so output parsing is locale-proof.

    On failure the command's stderr becomes the cause of the raised CommandError.
    """
    args = [os.fspath(a) for a in argv]
    full_env = dict(os.environ)
    full_env["LC_ALL"] = "C"
    if env:
        full_env.update(env)
    log.debug("running %s", args)
    try:
        proc = subprocess.run(
            args,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=full_env,
            timeout=timeout,
            check=False,
        )
    except OSError as exc:
        raise CommandError(f"running {args[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{args[0]} timed out after {timeout}s") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or b"").decode(errors="replace").strip()
        err = CommandError(f"{args[0]} failed with exit status {proc.returncode}")
        if detail:
            raise err from CommandError(detail)
        raise err
    return proc


def output(
    argv: Sequence[Arg],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """stdout of a successful command, decoded."""
    proc = run(argv, input=input, env=env, timeout=timeout)
    return proc.stdout.decode(errors="replace")
