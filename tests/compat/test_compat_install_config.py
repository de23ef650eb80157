"""Upstream's installer config snippets parse and merge (docs/compat.md#install-config-files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nestos_inst.install.config import load_config_file, merge_layers

pytestmark = pytest.mark.compat


def test_upstream_install_snippets_accumulate(upstream: Path) -> None:
    files = [upstream / "customize" / f"install-{i}.conf" for i in (1, 2)]
    layers = [load_config_file(f) for f in files]
    cfg = merge_layers([*layers, {"append-karg": ["cli"]}], [str(f) for f in files] + ["cli"])
    assert cfg.append_karg == ("install-config-karg-1", "install-config-karg-2", "cli")
    assert cfg.to_args() == [
        "--append-karg", "install-config-karg-1",
        "--append-karg", "install-config-karg-2",
        "--append-karg", "cli",
    ]  # fmt: skip
