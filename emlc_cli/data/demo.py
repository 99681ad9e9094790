"""The packaged demo set: 2,200 CIFAR-10 images of four classes (airplane, automobile, frog, horse):
2,000 with 40 % symmetric label noise and 200 verified, plus 500 test images."""
from __future__ import annotations

import tarfile
from importlib import resources
from pathlib import Path

DEMO_RECIPE = "quick"
# correct.cross_fit=0: `quick`'s auto would cross-fit the demo's 2,000 noisy images (5 fold pairs, about 4x the
# minute the demo takes); `emlc demo correct.cross_fit=auto` shows it.
DEMO_OVERRIDES = ("train.epochs=14", "meta.warmup_epochs=4", "correct.cross_fit=0")


def demo_archive() -> Path:
    return Path(str(resources.files("emlc_cli") / "assets" / "demo.tar.gz"))


def extract_demo(dest: Path) -> Path:
    """Unpack the demo set into `dest` (train/, test/, clean.csv, truth.csv); returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(demo_archive(), "r:gz") as tar:
        tar.extractall(dest, filter="data")
    return dest
