"""Entry point: parse, dispatch, one top-level error handler, exit codes (§12.1)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from .errors import NestosError, UsageError, format_chain, terminating_signals_raise


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import build_parser

    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("NESTOS_INSTALLER_DEBUG") else logging.WARNING,
        format="%(name)s: %(message)s",
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with terminating_signals_raise():
            rc = func(args)
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except NestosError as exc:
        sys.stderr.write(format_chain(exc) + "\n")
        return 1
    except BrokenPipeError:
        # Commands that must die silently restore SIGPIPE themselves; others say so.
        sys.stderr.write("Error: Broken pipe (os error 32)\n")
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or Terminated (SIGTERM/SIGHUP)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return 1
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
