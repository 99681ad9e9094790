"""The data path at scale (issue 16, item 7): procedurally generated folders of 32-px JPEGs (10 classes), written
once under --work and reused; for each size, in fresh processes: listing the folder, the first decode (into the
persistent image store) and a second run's (memory-mapped from the store), with wall time, time per image and
peak RSS. Smaller sizes are hard links to the first images of the largest. Run on a quiet machine:

    python benchmarks/scale.py --work /tmp/scale --sizes 100000 300000 1000000
    python benchmarks/scale.py --work /tmp/scale --sizes 100000 --nproc 2        # the same under torchrun (gloo)
    python benchmarks/scale.py --work /tmp/scale --sizes 50000 --pixels 224      # 224-px JPEGs, decoded at 224

Training, prediction and the correction step are measured elsewhere (benchmarks/scaling.py,
benchmarks/correction_scale.py); this isolates what grows with the image count before the first step."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 10


def generate(folder: Path, count: int, side: int = 32) -> None:
    """count JPEGs of side x side px: a class colour plus noise and a random block, so files differ and compress
    like photos (the noise is drawn at 32 px and scaled up, as a photo's detail is coarser than its pixels)."""
    from PIL import Image

    if (folder / ".complete").is_file():
        return
    rng = np.random.default_rng(0)
    colours = rng.integers(30, 225, (CLASSES, 3))
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):  # resumable: an interrupted generation keeps what it wrote (the same bytes again)
        c = i % CLASSES
        pixels = np.clip(colours[c] + rng.normal(0, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
        y, x = rng.integers(0, 24, 2)
        pixels[y:y + 8, x:x + 8] = rng.integers(0, 255, 3)
        if side != 32:
            pixels = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BILINEAR))
        target = folder / f"class{c}" / f"{i:07d}.jpg"
        if not target.exists():
            Image.fromarray(pixels).save(target, quality=90)
    (folder / ".complete").write_text(str(count))


def linked(source: Path, folder: Path, count: int) -> None:
    """The first `count` images of `source` as hard links (the same bytes, no second copy on disk)."""
    if (folder / ".complete").is_file():
        return
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        name = f"class{i % CLASSES}/{i:07d}.jpg"
        if not (folder / name).exists():
            os.link(source / name, folder / name)
    (folder / ".complete").write_text(str(count))


def phase(data: Path, near: Path, side: int) -> None:
    """One run's data phases, in this process (each process of a torchrun launch): print them as JSON."""
    import torch

    from emlc_cli.runtime import distributed
    from emlc_cli.cache.images import image_cache, placement
    from emlc_cli.data.imagefolder import load_image_folder

    world = distributed.init(torch.device("cpu"))
    sampler = _PeakSampler()
    started = time.perf_counter()
    ds = load_image_folder(data)
    listed = time.perf_counter()
    with image_cache(ds, side, 0, "auto", torch.device("cpu"), near) as (images, bad):  # what `emlc clean` times as decode
        distributed.barrier()
        decoded = time.perf_counter()
        assert images.shape == (len(ds), 3, side, side) and not bad
        placed = placement("auto", images.numel(), torch.device("cpu"))
        resident = {**_resident_gb(), **sampler.stop()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"images": len(ds), "list_s": listed - started, "decode_s": decoded - listed, "peak_rss_gb": peak,
                      "rank": world.rank, "placed": placed, **resident}))
    if world.distributed:
        distributed.shutdown()


def _resident_gb() -> dict:
    """Resident memory now, split as Linux does: anonymous (the process's own) and file-backed (pages of a mapped
    cache file, which the kernel writes back and drops under pressure; ru_maxrss counts both)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "RssShmem"):
            fields[key] = int(value.split()[0]) / 2**20
    return {"anon_gb": fields.get("RssAnon", 0.0), "file_gb": fields.get("RssFile", 0.0) + fields.get("RssShmem", 0.0)}


class _PeakSampler:
    """The largest anonymous and file-backed resident memory seen, sampled every 50 ms on a thread."""

    def __init__(self) -> None:
        import threading

        self.peak = {"anon_gb": 0.0, "file_gb": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            for key, value in _resident_gb().items():
                self.peak[key] = max(self.peak[key], value)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {f"peak_{k}": v for k, v in self.peak.items()}


def run_phase(data: Path, store_dir: Path, near: Path, side: int, nproc: int) -> dict:
    """One run in fresh processes; with nproc > 1 under torchrun, rank 0's times and the largest peak RSS."""
    env = {**os.environ, "EMLC_CACHE_DIR": str(store_dir), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                     f"--nproc_per_node={nproc}"]
    done = subprocess.run([*launcher, __file__, "--phase", str(data), "--near", str(near), "--pixels", str(side)], env=env,
                          capture_output=True, text=True, check=True)
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    first = next(r for r in reports if r["rank"] == 0)
    return {**first, "peak_rss_gb": max(r["peak_rss_gb"] for r in reports)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/emlc-scale"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--pixels", type=int, default=32, help="generated and decoded image side")
    ap.add_argument("--nproc", type=int, default=1, help="processes per run (torchrun, gloo)")
    ap.add_argument("--phase", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--near", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        return phase(args.phase, args.near, args.pixels)
    largest = max(args.sizes)
    started = time.perf_counter()
    prefix = "images" if args.pixels == 32 else f"images{args.pixels}"
    generate(args.work / f"{prefix}-{largest}", largest, args.pixels)
    print(f"# {largest} JPEGs ready in {time.perf_counter() - started:.0f} s (0 s when reused)", flush=True)
    print(f"# {args.pixels} px, {args.nproc} process(es) per run")
    print("| images | listing | first run's decode (into the store) | per image | second run's (read from the store) | second / first | peak RSS first / second | first run's peak anonymous / file-backed | placed |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sorted(args.sizes):
        data = args.work / f"{prefix}-{size}"
        if size != largest:
            linked(args.work / f"{prefix}-{largest}", data, size)
        store_dir = args.work / f"store-{prefix}-{size}"
        subprocess.run(["rm", "-rf", str(store_dir)], check=True)
        first = run_phase(data, store_dir, args.work / "runs" / "x", args.pixels, args.nproc)
        second = run_phase(data, store_dir, args.work / "runs" / "x", args.pixels, args.nproc)
        print(f"| {size:,} | {first['list_s']:.1f} s | {first['decode_s']:.1f} s | {first['decode_s'] / size * 1e6:.0f} us | "
              f"{second['decode_s']:.2f} s | {second['decode_s'] / first['decode_s']:.1%} | "
              f"{first['peak_rss_gb']:.2f} / {second['peak_rss_gb']:.2f} GB | {first['peak_anon_gb']:.2f} / {first['peak_file_gb']:.2f} GB | "
              f"{second['placed']} |", flush=True)


if __name__ == "__main__":
    main()
