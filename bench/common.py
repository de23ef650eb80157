"""The benchmark framework: alternating runs, medians, a goal per ratio, one JSON report.

Seven people may share this machine's two cores, so a single timing says little. Every
comparison therefore runs ours and its baseline alternately, pair after pair (the order
flips every pair, so a load that rises during the run hurts both alike), and reports
the median over at least five pairs together with the spread (min-max of the per-pair
ratios) and the load average before and after. A ratio is always "higher is better"
for speed (baseline seconds / our seconds); limits (peak RSS, sizes) are recorded with
`limit()` and compare one value against a bound.

Every result is printed as one line and collected; `python -m bench` writes them all to
build/bench-report.json so a regression is visible at a glance.

API for a bench_*.py module (it defines `main() -> int | None`):

    from bench.common import Sample, compare, limit, run_pipeline

    r = compare("install xz", ours=lambda: run_pipeline([argv]),
                baseline=lambda: run_pipeline([xz_argv, dd_argv], stdin=path), goal=1.0)
    limit("install peak RSS", r.ours_rss_mib, 100, unit="MiB")

`ours`/`baseline` return seconds (float) or a Sample (seconds, peak RSS, CPU seconds).
NESTOS_BENCH_RUNS overrides the number of pairs (default 5; values below 5 are allowed
for quick experiments and marked as such in the report).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
REPORT = REPO / "build" / "bench-report.json"
CACHE = Path(os.environ.get("NESTOS_BENCH_CACHE", "/var/tmp/nestos-bench-cache"))
MIB = 1 << 20
MIN_RUNS = 5


@dataclass(frozen=True)
class Sample:
    """One timed run: wall seconds, peak RSS of the largest process (KiB), CPU seconds."""

    secs: float
    rss_kib: int = 0
    cpu: float = 0.0


@dataclass
class Result:
    """One line of the report. `ratio` is None for limits that have no baseline."""

    name: str
    ours: float
    baseline: float | None
    ratio: float | None
    goal: float | None
    met: bool | None
    unit: str = "s"
    kind: str = "speed"  # speed: ratio >= goal; limit: ours <= goal; info: no goal
    runs: int = 0
    ratio_min: float | None = None
    ratio_max: float | None = None
    load_before: float = 0.0
    load_after: float = 0.0
    ours_rss_mib: float = 0.0
    baseline_rss_mib: float = 0.0
    ours_cpu: float = 0.0
    baseline_cpu: float = 0.0
    # CPU seconds the whole machine spent during the run (/proc/stat, machine_cpu()):
    # unlike `*_cpu` it includes processes the measured tree did not wait for (GPGME
    # runs gpg detached, so gpg's CPU never reaches our rusage) and kernel threads
    # working for the run (the loop device's writeback), plus whatever else ran.
    ours_machine_cpu: float = 0.0
    baseline_machine_cpu: float = 0.0
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)


RESULTS: list[Result] = []


def runs() -> int:
    """Pairs per comparison (NESTOS_BENCH_RUNS, default 5)."""
    return max(1, int(os.environ.get("NESTOS_BENCH_RUNS", str(MIN_RUNS))))


def load() -> float:
    """The one-minute load average (printed with every figure)."""
    return os.getloadavg()[0]


def machine_cpu() -> float:
    """CPU seconds all cores have spent busy since boot: user, nice, system, irq and
    softirq from /proc/stat (idle, iowait and a hypervisor's steal left out).

    A difference of two readings is what a run cost the whole machine, which is the
    figure that decides a CPU-bound run (a fleet on two cores): it counts work the
    run's own rusage cannot see, such as the gpg that GPGME starts detached (it is
    re-parented to init, so its CPU never reaches our wait4) and the loop device's
    kernel workers.
    """
    with open("/proc/stat") as f:
        fields = f.readline().split()
    ticks = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    return (user + nice + system + irq + softirq) / ticks


def _sample(value: float | Sample) -> Sample:
    return value if isinstance(value, Sample) else Sample(float(value))


def _fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f} s"
    return f"{v:.4g} {unit}"


def _emit(r: Result) -> Result:
    RESULTS.append(r)
    mark = "" if r.met is None else ("ok" if r.met else "BELOW GOAL")
    if r.kind == "limit":
        text = f"{r.name}: {_fmt(r.ours, r.unit)} (limit {_fmt(r.goal, r.unit)}) {mark}"
    elif r.ratio is None:
        text = f"{r.name}: {_fmt(r.ours, r.unit)}"
    else:
        goal = f"goal >= {r.goal:.2f}" if r.goal is not None else "no goal"
        spread = (
            f" (min-max {r.ratio_min:.2f}-{r.ratio_max:.2f}, {r.runs} pairs)"
            if r.ratio_min is not None and r.ratio_max is not None
            else ""
        )
        text = (
            f"{r.name}: ours {_fmt(r.ours, r.unit)}, baseline {_fmt(r.baseline, r.unit)}, "
            f"ratio {r.ratio:.2f}{spread}, {goal}{' ' + mark if mark else ''}"
        )
    if r.ours_rss_mib or r.baseline_rss_mib:
        text += f"; peak RSS {r.ours_rss_mib:.0f}/{r.baseline_rss_mib:.0f} MiB"
    if r.ours_cpu or r.baseline_cpu:
        text += f"; CPU {r.ours_cpu:.1f}/{r.baseline_cpu:.1f} s"
    if r.ours_machine_cpu or r.baseline_machine_cpu:
        text += f"; machine CPU {r.ours_machine_cpu:.1f}/{r.baseline_machine_cpu:.1f} s"
    if r.note:
        text += f"; {r.note}"
    text += f"  [load {r.load_before:.1f}->{r.load_after:.1f}]"
    print(text, flush=True)
    return r


def compare(
    name: str,
    ours: Callable[[], float | Sample],
    baseline: Callable[[], float | Sample],
    *,
    goal: float | None,
    pairs: int | None = None,
    setup: Callable[[], None] | None = None,
    note: str = "",
) -> Result:
    """Time `ours` against `baseline` in alternating pairs; record and print the result.

    The ratio is the median of the per-pair ratios baseline/ours (neighbouring runs see
    similar load, so a pair's ratio is steadier than a ratio of two medians); `ours` and
    `baseline` in the report are the median seconds. `setup` runs before every run
    (untimed), e.g. to remove an output file.
    """
    n = pairs if pairs is not None else runs()
    before = load()
    mine: list[Sample] = []
    theirs: list[Sample] = []
    machine: dict[str, list[float]] = {"o": [], "b": []}
    for i in range(n):
        order = (("o", ours), ("b", baseline)) if i % 2 == 0 else (("b", baseline), ("o", ours))
        for who, fn in order:
            if setup is not None:
                setup()
            start = machine_cpu()
            (mine if who == "o" else theirs).append(_sample(fn()))
            machine[who].append(machine_cpu() - start)
    ratios = [b.secs / o.secs for o, b in zip(mine, theirs, strict=True)]
    ratio = statistics.median(ratios)
    r = Result(
        name=name,
        ours=statistics.median(s.secs for s in mine),
        baseline=statistics.median(s.secs for s in theirs),
        ratio=ratio,
        goal=goal,
        met=None if goal is None else ratio >= goal,
        runs=n,
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        load_before=before,
        load_after=load(),
        ours_rss_mib=max(s.rss_kib for s in mine) / 1024,
        baseline_rss_mib=max(s.rss_kib for s in theirs) / 1024,
        ours_cpu=statistics.median(s.cpu for s in mine),
        baseline_cpu=statistics.median(s.cpu for s in theirs),
        ours_machine_cpu=statistics.median(machine["o"]),
        baseline_machine_cpu=statistics.median(machine["b"]),
        note=note if n >= MIN_RUNS else f"{note}; only {n} pairs".removeprefix("; "),
    )
    return _emit(r)


def limit(name: str, value: float, bound: float, *, unit: str, note: str = "") -> Result:
    """Record a value that must stay at or below `bound` (peak RSS, a size ratio)."""
    return _single(name, value, bound, unit=unit, note=note)


def info(name: str, value: float, *, unit: str, note: str = "") -> Result:
    """Record a figure without a goal (shown for context, e.g. a start-up time)."""
    return _single(name, value, None, unit=unit, note=note)


def _single(name: str, value: float, bound: float | None, *, unit: str, note: str) -> Result:
    """One measured value, no baseline: a limit when it has a bound, else info."""
    now = load()
    return _emit(
        Result(
            name=name,
            ours=value,
            baseline=None,
            ratio=None,
            goal=bound,
            met=None if bound is None else value <= bound,
            unit=unit,
            kind="info" if bound is None else "limit",
            load_before=now,
            load_after=now,
            note=note,
        )
    )


def write_report(results: Sequence[Result], path: Path = REPORT) -> None:
    """Write the results as a JSON list; entries of benchmarks not run this time are
    kept (with their own timestamps) so `make bench BENCH=x` updates only x's lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = {r.name for r in results}
    old: list[dict[str, object]] = []
    try:
        loaded = json.loads(path.read_text())
        if isinstance(loaded, list):
            old = [e for e in loaded if isinstance(e, dict) and e.get("name") not in fresh]
    except (OSError, ValueError):
        pass
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entries = old + [{**asdict(r), "when": stamp} for r in results]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.replace(path)


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the process's own peak RSS since exec (ru_maxrss would include the parent's)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_pipeline(
    argv_list: Sequence[Sequence[str]],
    stdin: str | Path | None = None,
    *,
    env: dict[str, str] | None = None,
    stdout: str | Path | None = None,
) -> Sample:
    """Run `a | b | ...` (argv lists, no shell): wall seconds, the largest member's peak
    RSS (sampled VmHWM) and the CPU seconds of all members. Raises on any failure."""
    start = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    first_in = open(stdin, "rb") if stdin is not None else None  # noqa: SIM115
    last_out = open(stdout, "wb") if stdout is not None else None  # noqa: SIM115
    try:
        prev: IO[bytes] | int = first_in if first_in is not None else subprocess.DEVNULL
        for i, argv in enumerate(argv_list):
            last = i == len(argv_list) - 1
            out: IO[bytes] | int = subprocess.PIPE
            if last:
                out = last_out if last_out is not None else subprocess.DEVNULL
            proc = subprocess.Popen(
                list(argv),
                stdin=prev,
                stdout=out,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            if procs and procs[-1].stdout is not None:
                procs[-1].stdout.close()
            prev = proc.stdout if proc.stdout is not None else subprocess.DEVNULL
            procs.append(proc)
        peak: dict[int, int] = {}
        cpu = 0.0
        running = list(procs)
        failed: list[str] = []
        while running:
            for proc in list(running):
                peak[proc.pid] = max(peak.get(proc.pid, 0), peak_rss_kib(proc.pid))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid == 0:
                    continue
                running.remove(proc)
                cpu += usage.ru_utime + usage.ru_stime
                proc.returncode = os.waitstatus_to_exitcode(status)
                if proc.returncode != 0:
                    failed.append(f"{proc.args!r} exited with {proc.returncode}")
            if running:
                time.sleep(0.02)
        if failed:
            raise RuntimeError("; ".join(failed))
        return Sample(time.monotonic() - start, max(peak.values(), default=0), cpu)
    finally:
        if first_in is not None:
            first_in.close()
        if last_out is not None:
            last_out.close()


def python_env() -> dict[str, str]:
    """The environment for running this checkout's CLI in a child, byte-compiled.

    An installed package (the RPM, a wheel) ships its modules compiled; a checkout run
    with PYTHONDONTWRITEBYTECODE (set on this machine) would compile every module from
    source on every run (~0.1 s of CPU and wall per start-up), a cost no user pays.
    """
    _byte_compile()
    return dict(os.environ, PYTHONPATH=str(REPO), LC_ALL="C")


_COMPILED: list[bool] = []


def _byte_compile() -> None:
    """Compile the package's modules once per benchmark process (like an install)."""
    if not _COMPILED:
        import compileall

        compileall.compile_dir(REPO / "nestos_inst", quiet=1)
        _COMPILED.append(True)
