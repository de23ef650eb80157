"""Service mode start-up costs that sit on the boot's critical path.

1. The generator (runs before any unit starts): our plain-sh script against the same
   decision made in Python with nestos_inst's karg parser (the baseline a Python
   generator would cost). Under QEMU/TCG every millisecond here is ~20 at boot.
2. The service's config phase (kargs + installer.d → InstallConfig) against a bare
   interpreter start, to show what is left for the installer itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, compare

RUNS = int(os.environ.get("BENCH_SERVICE_RUNS", "9"))


def _run(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - t


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
            NESTOS_INSTALLER_NOREBOOT_FLAG=str(d / "noreboot"),
            NESTOS_INSTALLER_INITRD="0",
            NESTOS_INSTALLER_GENERATOR_STDIO="1",
        )
        gen = [str(REPO / "units/nestos-installer-generator"), str(d / "out")]
        py_gen = (
            "from nestos_inst.service.cmdline import Cmdline, flag_set, install_device;"
            f"c = Cmdline.read({str(d / 'cmdline')!r});"
            "install_device(c); flag_set(c, 'skip_reboot')"
        )
        compare(
            "service generator (sh) vs the same decision in Python",
            lambda: _run(gen, env),
            lambda: _run([sys.executable, "-c", py_gen], env),
            goal=None,
            pairs=RUNS,
        )
        cfg_phase = (
            "from pathlib import Path;"
            "from nestos_inst.service.cmdline import Cmdline, parse_kargs;"
            "from nestos_inst.service.main import build_config, config_files;"
            f"k = parse_kargs(Cmdline.read({str(d / 'cmdline')!r}));"
            f"build_config(k, config_files([Path({str(conf)!r})]))"
        )
        compare(
            "service config phase vs bare python start-up",
            lambda: _run([sys.executable, "-c", cfg_phase], env),
            lambda: _run([sys.executable, "-c", "pass"], env),
            goal=None,
            pairs=RUNS,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
