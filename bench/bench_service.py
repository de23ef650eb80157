"""Service mode start-up costs that sit on the boot's critical path.

1. The generator (runs before any unit starts): our plain-sh script against the same
   decision made in Python with nestos_inst's karg parser (the baseline a Python
   generator would cost). Under QEMU/TCG every millisecond here is ~20 at boot.
2. The service's config phase (kargs + installer.d → InstallConfig) against a bare
   interpreter start, to show what is left for the installer itself.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("BENCH_SERVICE_RUNS", "15"))


def _median(argv: list[str], env: dict[str, str]) -> float:
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        d = Path(tmp)
        (d / "cmdline").write_text(
            "BOOT_IMAGE=/vmlinuz console=ttyS0 nestos.inst.install_dev=/dev/vda "
            "nestos.inst.platform_id=qemu ip=dhcp rd.neednet=1\n"
        )
        conf = d / "installer.d"
        conf.mkdir()
        (conf / "0000.yaml").write_text("image-file: /x.raw.gz\nappend-karg: [a]\n")
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(REPO),
            NESTOS_INSTALLER_CMDLINE=str(d / "cmdline"),
            NESTOS_INSTALLER_CONFIG_DIRS=str(conf),
            NESTOS_INSTALLER_REBOOT_FLAG=str(d / "flag"),
            NESTOS_INSTALLER_INITRD="0",
            NESTOS_INSTALLER_GENERATOR_STDIO="1",
        )
        sh = _median([str(REPO / "units/nestos-installer-generator"), str(d / "out")], env)
        py_gen = (
            "from nestos_inst.service.cmdline import Cmdline, flag_set, install_device;"
            f"c = Cmdline.read({str(d / 'cmdline')!r});"
            "install_device(c); flag_set(c, 'skip_reboot')"
        )
        py = _median([sys.executable, "-c", py_gen], env)
        print(f"generator: sh {sh * 1000:.1f} ms, python baseline {py * 1000:.1f} ms "
              f"(python/sh = {py / sh:.1f}x)")  # fmt: skip

        cfg_phase = (
            "from pathlib import Path;"
            "from nestos_inst.service.cmdline import Cmdline, parse_kargs;"
            "from nestos_inst.service.main import build_config, config_files;"
            f"k = parse_kargs(Cmdline.read({str(d / 'cmdline')!r}));"
            f"build_config(k, config_files([Path({str(conf)!r})]))"
        )
        cfg = _median([sys.executable, "-c", cfg_phase], env)
        bare = _median([sys.executable, "-c", "pass"], env)
        print(f"service config phase: {cfg * 1000:.1f} ms, bare python {bare * 1000:.1f} ms "
              f"(ratio {cfg / bare:.1f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
