"""A rank of tests/test_distributed.py's shutdown test: rank 1 leaves the process group first; rank 0 sees that,
saves a file as rank 0 does its outputs, marks that it is leaving and leaves. Rank 1 exits 3 when it came back
from distributed.shutdown() before rank 0 got there (the ranks are meant to leave together)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from emlc_cli.runtime import distributed


def main(folder: Path) -> int:
    world = distributed.init(torch.device("cpu"))
    if world.rank == 1:
        (folder / "1-leaving").touch()
        distributed.shutdown()
        return 0 if (folder / "0-leaving").exists() else 3
    while not (folder / "1-leaving").exists():  # an event, polled: whatever the machine's speed, rank 1 is leaving
        time.sleep(0.01)
    torch.save(torch.zeros(2_000_000), folder / "outputs.pt")
    (folder / "0-leaving").touch()
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
