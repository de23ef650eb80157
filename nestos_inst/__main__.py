"""Entry point: parse, dispatch, one top-level error handler, exit codes
(docs/compat.md#exit-codes)."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

from .errors import NestosError, UsageError, describe, format_chain, terminating_signals_raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv`; without it, this process's own (sys.argv), and the
    process ends when this returns."""
    from .cli.common import guarded_stdout

    try:
        with guarded_stdout():
            try:
                return _main(argv)
            except ModuleNotFoundError as exc:
                from .deps import missing_module_message

                text = missing_module_message(exc.name)
                if text is None:
                    raise
                _report(f"Error: {text}")
                return 1
    finally:
        if argv is None:
            _before_exit()


def _before_exit() -> None:
    """The command is over and the interpreter shuts down next: collect the young
    garbage, then freeze what the cyclic GC tracks (fast path `gc-freeze`).

    Shutdown otherwise runs several full collections over every object of the ~400
    modules a command loads: 35-40 ms of CPU and wall time per start, a tenth of a
    small install. Objects are still freed by reference counting and module teardown;
    only reference cycles that already were garbage before the young collection are
    left to the OS. Outputs are closed and synced by the commands themselves, and
    stdout/stderr are flushed by the interpreter as before.
    """
    from . import fastpaths

    if fastpaths.enabled("gc-freeze"):
        import gc

        gc.collect(1)
        gc.freeze()


def _report(text: str) -> None:
    """The one error line(s) on stderr; a broken stderr leaves only the exit code."""
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except OSError:
        pass


def _flush_stdout() -> None:
    """Push out buffered output now, so that a failure is reported, not lost at exit."""
    if sys.stdout is not None:  # None when started with fd 1 closed
        sys.stdout.flush()


def _main(argv: Sequence[str] | None) -> int:
    from .cli import build_parser
    from .cli.common import OutputError

    logging.basicConfig(
        level=logging.DEBUG if os.environ.get("NESTOS_INSTALLER_DEBUG") else logging.WARNING,
        format="%(name)s: %(message)s",
    )
    try:
        try:
            parser = build_parser(sys.argv[1:] if argv is None else list(argv))
            args, extra = parser.parse_known_args(argv)
            if extra:
                # Reported with the usage of the command they were given to.
                command = getattr(args, "command_parser", None) or parser
                command.error("unrecognized arguments: " + " ".join(extra))
        except SystemExit as exc:  # --help, --version, usage errors
            _flush_stdout()
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        func = getattr(args, "func", None)
        if func is None:
            parser.print_help(sys.stderr)
            return 2
        _process_settings()
        with terminating_signals_raise():
            try:
                rc = func(args)
            finally:
                _stop_network()
        _flush_stdout()
    except UsageError as exc:
        _report(f"error: {exc}")
        return 2
    except OutputError as exc:
        _report(format_chain(exc))
        return 1
    except NestosError as exc:
        _report(format_chain(exc))
        return 1
    except BrokenPipeError:
        # Commands that must die silently restore SIGPIPE themselves; others say so.
        _report("Error: Broken pipe (os error 32)")
        return 1
    except OSError as exc:  # a failure no caller put in context: still one clear line
        _report(f"Error: {describe(exc)}")
        return 1
    except UnicodeError as exc:  # bytes that are not UTF-8 where text was expected
        _report(f"Error: {exc}")
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or Terminated (SIGTERM/SIGHUP)
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    return int(rc or 0)


def _process_settings() -> None:
    """Process-wide settings, applied here once and nowhere else.

    The malloc tuning (io/heap.py) must precede the first decoder thread; it is cheap
    enough to apply for every command (fastpaths name `heap` switches it off).
    """
    from .io.heap import configure

    configure()


def _stop_network() -> None:
    """Close connections and join the network thread, if a command started it."""
    network = sys.modules.get("nestos_inst.net.http")
    if network is not None:
        network.stop_network()


if __name__ == "__main__":
    sys.exit(main())
