"""The frozen recipe's embedding pass against the bare timm model's forward, side by side in one process.

    python benchmarks/embed_throughput.py /tmp/cifar/train \\
        --backbone local-dir:../shared/models/tf_efficientnet_lite0.in1k --images 640 --rounds 3

emlc's pass (`embed_source` with the store off) reads JPEGs from disk, decodes and resizes them at the model's own
size, crop and interpolation, normalises and embeds them a batch at a time, decoding the next batch while this one
is embedded. The bare forward is `model(x)` under `torch.no_grad()` on tensors timm's own transform prepared
beforehand (not timed): the ceiling. Same batch size, threads and device; rounds interleaved (bare, emlc, bare,
...); the ratio is emlc's images/s over the bare forward's, median over rounds. Run it alone on the machine."""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ["EMLC_CACHE_DIR"] = "none"  # every round embeds: nothing is read back from the store

import torch  # noqa: E402

from emlc_cli.data.kinds import load_source  # noqa: E402
from emlc_cli.recipe.schema import load_recipe  # noqa: E402
from emlc_cli.train.frozen import embed_source, frozen_encoder  # noqa: E402


def sample_folder(source: Path, count: int, into: Path) -> Path:
    """An image folder of `count` images, the same number from each class of `source` (copied, sorted names)."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    for index, cls in enumerate(classes):
        share = count // len(classes) + (index < count % len(classes))
        (into / cls.name).mkdir(parents=True)
        for image in sorted(cls.iterdir())[:share]:
            shutil.copy(image, into / cls.name / image.name)
    return into


def bare_inputs(folder: Path, model: torch.nn.Module) -> list[torch.Tensor]:
    """Every image through timm's own eval transform, stacked (the bare forward's input, made before timing)."""
    import timm
    from PIL import Image

    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    paths = sorted(folder.rglob("*.*"))
    return [transform(Image.open(p).convert("RGB")) for p in paths]


@torch.no_grad()
def bare_rate(model: torch.nn.Module, inputs: list[torch.Tensor], batch: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(inputs), batch):
        model(torch.stack(inputs[start:start + batch]))
    return len(inputs) / (time.perf_counter() - started)


def emlc_rate(folder: Path, encoder) -> float:
    data = load_source(str(folder))
    started = time.perf_counter()
    embed_source(data, encoder, torch.device("cpu"))
    return len(data) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="an image folder (class sub-folders)")
    parser.add_argument("--backbone", required=True, help="model.backbone, e.g. local-dir:PATH")
    parser.add_argument("--images", type=int, default=640)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = 64  # the embedding pass's CPU batch (train/frozen.py)
    encoder = frozen_encoder(load_recipe("frozen", [f"model.backbone={args.backbone}", "model.input_size=0"]),
                             torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        folder = sample_folder(args.source, args.images, Path(tmp) / "images")
        inputs = bare_inputs(folder, encoder.module)
        rows = []
        for round_ in range(args.rounds):
            bare, ours = bare_rate(encoder.module, inputs, batch), emlc_rate(folder, encoder)
            rows.append((bare, ours))
            print(f"round {round_ + 1}: bare forward {bare:.1f} images/s, emlc embedding pass {ours:.1f} images/s, "
                  f"ratio {ours / bare:.2f}", flush=True)
    ratio = statistics.median(ours / bare for bare, ours in rows)
    print(f"| {args.backbone} | {args.images} | {args.threads} | {batch} | "
          f"{statistics.median(b for b, _ in rows):.1f} | {statistics.median(o for _, o in rows):.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
