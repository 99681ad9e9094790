"""The decoded-image cache: placement, and an mmap cache that trains exactly like an in-memory one."""
from __future__ import annotations

import torch
from typer.testing import CliRunner

from conftest import TINY
from emlc_cli.cli.app import app
from emlc_cli.cache.images import placement

runner = CliRunner()


def test_placement_on_cpu():
    cpu = torch.device("cpu")
    assert placement("auto", 10 << 20, cpu) == "memory"
    assert placement("auto", 1 << 60, cpu) == "mmap"
    assert placement("device", 1 << 20, cpu) == "memory"
    assert placement("mmap", 1, cpu) == "mmap"


def test_auto_placement_counts_every_process_on_the_machine(monkeypatch):
    """8 local ranks each reading a cache of a fifth of RAM would hold 1.6 times the machine's memory."""
    from emlc_cli.cache import images as cache

    monkeypatch.setattr(cache, "_ram_bytes", lambda: 24 << 30)
    cpu, fifth = torch.device("cpu"), int(0.2 * (24 << 30))
    assert placement("auto", fifth, cpu) == "memory"
    assert placement("auto", fifth, cpu, copies=8) == "mmap"
    assert placement("auto", 1 << 20, cpu, copies=8) == "memory"
    monkeypatch.setattr(cache.distributed, "world", lambda: cache.distributed.World(0, 8))
    for name, value in {"WORLD_SIZE": "8", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "4",
                        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}.items():  # torchrun's, on 2 nodes
        monkeypatch.setenv(name, value)
    assert cache._local_processes() == 4


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
