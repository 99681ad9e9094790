"""The decoded-image cache: placement, and an mmap cache that trains exactly like an in-memory one."""
from __future__ import annotations

import torch
from typer.testing import CliRunner

from conftest import TINY
from emlc_cli.cli.app import app
from emlc_cli.data.cache import placement

runner = CliRunner()


def test_placement_on_cpu():
    cpu = torch.device("cpu")
    assert placement("auto", 10 << 20, cpu) == "memory"
    assert placement("auto", 1 << 60, cpu) == "mmap"
    assert placement("device", 1 << 20, cpu) == "memory"
    assert placement("mmap", 1, cpu) == "mmap"


def test_mmap_cache_gives_the_same_run_and_is_removed(noisy_folder):
    runs = {}
    for mode in ("memory", "mmap"):
        out = noisy_folder["tmp"] / f"run_{mode}"
        result = runner.invoke(app, ["clean", str(noisy_folder["root"]), "--clean", str(noisy_folder["clean"]), "--recipe", "quick",
                                     *TINY, f"data.cache={mode}", "--out", str(out), "--device", "cpu", "-q"])
        assert result.exit_code == 0, result.output
        runs[mode] = (out / "corrected.csv").read_text()
    assert runs["mmap"] == runs["memory"]
    assert not list(noisy_folder["tmp"].glob(".emlc-cache-*"))
