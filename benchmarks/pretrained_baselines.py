"""Baselines on pretrained ImageNet embeddings for the real-noise cells of quality_matrix.py (issue 32, item 8).

    python benchmarks/pretrained_baselines.py /tmp/cifar /tmp/pre --real-csv ../shared/data/cifar10n-random1.csv
    python benchmarks/pretrained_baselines.py /tmp/cifar /tmp/pre --cells real40-10k --views lite0,lite0+lite2 \
        --methods probe,verified_probe,knn,cleanlab,emlc
    python benchmarks/pretrained_baselines.py /tmp/cifar /tmp/pre --table-only --results benchmarks/RESULTS.md

Embeddings are made with timm's own transform (`timm.data.resolve_model_data_config` + `create_transform`) from
the models under ../shared/models (`local-dir:`), cached per image path under --emb (default /tmp/emb), so cells
sharing images reuse them; `-flip` views average the embedding of the image and of its mirror. Cells are the
quality_matrix.py cells, written by its own `write_task` (identical tasks). Methods, each on one view:
`probe`: a linear softmax probe trained on the given labels (verified rows under their verified label), each
noisy label replaced by the probe's out-of-fold (5-fold) argmax; `verified_probe`: the probe trained on the
verified images only, relabelling every noisy image; `knn`: the 50-nearest-neighbour vote (cosine);
`cleanlab`: `find_label_issues` on the out-of-fold probe probabilities, flagged labels replaced by the argmax;
`emlc`: `emlc clean emb.npy --recipe features` (the `--feature-column` path). Resumable: every
(cell, seed, view, method) result is kept in WORK/<cell>-s<seed>/pretrained.json and skipped when present. The
markdown table of everything under WORK is printed and, with --results, written into that file between the
PRETRAINED-BASELINES markers. Wall times are only comparable within one quiet run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cifar_benchmark as cb  # noqa: E402
import feature_regime  # noqa: E402
import quality_matrix as qm  # noqa: E402

from emlc_cli.data.manifest import read_path_label_csv  # noqa: E402

BACKBONES = {"lite0": "tf_efficientnet_lite0.in1k", "lite2": "tf_efficientnet_lite2.in1k"}
CELLS = ("real40-10k", "real17-10k", "real9-10k", "real40-10k-inplace", "real40-3k", "real9-600")
METHODS = ("probe", "verified_probe", "knn", "cleanlab", "emlc")
MARK_BEGIN, MARK_END = "<!-- PRETRAINED-BASELINES:BEGIN -->", "<!-- PRETRAINED-BASELINES:END -->"
CHUNK = 512  # images per cache file: a stopped embedding pass keeps what it finished


class EmbeddingCache:
    """One backbone's embeddings per image path (`mirrored`: of the mirrored images), in chunk files."""

    def __init__(self, root: Path, models: Path, backbone: str, cifar: Path, mirrored: bool = False) -> None:
        self.models, self.backbone, self.cifar, self.mirrored = models, backbone, cifar, mirrored
        self.folder = root / (backbone + ("-mirrored" if mirrored else ""))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.known: dict[str, np.ndarray] = {}
        for chunk in sorted(self.folder.glob("*.npz")):
            data = np.load(chunk)
            self.known.update(zip(data["paths"].tolist(), data["features"]))
        self.images_per_s: float | None = None

    def get(self, paths: list[str]) -> np.ndarray:
        missing = [p for p in dict.fromkeys(paths) if p not in self.known]
        if missing and self.backbone not in BACKBONES:
            raise SystemExit(f"{self.folder}: {len(missing)} images not imported (--import-run {self.backbone}=RUN)")
        if missing:
            self._embed(missing)
        return np.stack([self.known[p] for p in paths]).astype(np.float32)

    def add(self, paths: list[str], features: np.ndarray) -> None:
        name = hashlib.sha1("\n".join(paths).encode()).hexdigest()[:16]
        np.savez(self.folder / f"{name}.tmp.npz", paths=np.array(paths), features=features.astype(np.float16))
        (self.folder / f"{name}.tmp.npz").replace(self.folder / f"{name}.npz")
        self.known.update(zip(paths, features.astype(np.float16)))

    @torch.no_grad()
    def _embed(self, paths: list[str]) -> None:
        import timm
        from PIL import Image

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        model = timm.create_model(f"local-dir:{self.models / BACKBONES[self.backbone]}", pretrained=True, num_classes=0)
        model = model.eval().to(memory_format=torch.channels_last)
        transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
        started, done = time.perf_counter(), 0
        for start in range(0, len(paths), CHUNK):
            part = paths[start:start + CHUNK]
            x = torch.stack([transform(Image.open(self.cifar / "train" / p).convert("RGB")) for p in part])
            x = (x.flip(3) if self.mirrored else x).contiguous(memory_format=torch.channels_last)
            features = torch.cat([model(b) for b in x.split(64)]).numpy().astype(np.float16)
            name = hashlib.sha1("\n".join(part).encode()).hexdigest()[:16]
            np.savez(self.folder / f"{name}.tmp.npz", paths=np.array(part), features=features)
            (self.folder / f"{name}.tmp.npz").replace(self.folder / f"{name}.npz")
            self.known.update(zip(part, features))
            done += len(part)
            self.images_per_s = done / (time.perf_counter() - started)
            print(f"  {self.folder.name}: {done}/{len(paths)} images, {self.images_per_s:.1f} images/s", flush=True)


def import_run(caches: dict[str, "EmbeddingCache"], args: argparse.Namespace, spec: str) -> None:
    """`NAME=RUN`: the embeddings an emlc frozen run kept in its embedding store (summary.json's embedding.store,
    rows in corrected.csv's order; a run of several backbones: each one's, concatenated) become view NAME; their cosine similarity to the timm-transform embeddings of
    the backbone NAME contains (lite0, lite2), on the images both hold, is printed."""
    name, _, run = spec.partition("=")
    summary = json.loads((Path(run) / "summary.json").read_text())
    stores = [view["store"] for view in summary["embedding"].get("views", [summary["embedding"]])]  # A+B: each kept
    features = np.concatenate([np.load(Path(store) / "embeddings.npy").astype(np.float32) for store in stores], axis=1)
    paths = [r["path"] for r in qm_csv(Path(run) / "corrected.csv")]
    if len(paths) != len(features):
        raise SystemExit(f"{run}: {len(paths)} rows in corrected.csv, {len(features)} embeddings")
    caches[name] = EmbeddingCache(args.emb, args.models, name, args.cifar)
    caches[name].add(paths, features)
    own = next((b for b in BACKBONES if b in name), None)
    shared = [p for p in paths if own and p in caches[own].known]
    if shared:
        a, b = caches[name].get(shared), caches[own].get(shared)
        a = a[:, :b.shape[1]]  # several backbones: the first is `own`'s
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
        print(f"{name}: {len(paths)} embeddings; cosine to {own} (timm transform) on {len(shared)} images: "
              f"mean {cos.mean():.4f}, min {cos.min():.4f}", flush=True)


def view_features(caches: dict[str, EmbeddingCache], view: str, paths: list[str]) -> np.ndarray:
    """`lite0`, `lite0-flip`, `lite0+lite2`, `lite0+lite2-flip`: each backbone's embedding (`-flip`: averaged
    with the mirrored image's), concatenated."""
    flip = view.endswith("-flip")
    parts = []
    for name in view.removesuffix("-flip").split("+"):
        features = caches[name].get(paths)
        parts.append((features + caches[name + "-mirrored"].get(paths)) / 2 if flip else features)
    return np.concatenate(parts, axis=1)


def train_probe(x: torch.Tensor, y: torch.Tensor, classes: int, decay: float = 1e-3, steps: int = 100) -> torch.nn.Linear:
    """A softmax-regression probe, full batch L-BFGS with L2 weight decay, on standardised features."""
    torch.manual_seed(0)
    probe = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), y) + decay * probe.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return probe


def out_of_fold(x: torch.Tensor, y: torch.Tensor, classes: int, folds: int = 5, seed: int = 0) -> np.ndarray:
    fold = np.random.default_rng(seed).permutation(len(y)) % folds
    probs = np.zeros((len(y), classes), dtype=np.float32)
    for k in range(folds):
        train, held = torch.from_numpy(fold != k), torch.from_numpy(fold == k)
        with torch.no_grad():
            probs[held.numpy()] = train_probe(x[train], y[train], classes)(x[held]).softmax(1).numpy()
    return probs


def standardised(features: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(features).float()
    return (x - x.mean(0)) / (x.std(0) + 1e-6)


def baseline(method: str, features: np.ndarray, task: dict) -> torch.Tensor:
    """The corrected labels of one baseline: noisy rows relabelled, verified rows as given."""
    x, trained_on, noisy, k = standardised(features), task["trained_on"], task["noisy"], task["classes"]
    if method == "verified_probe":
        clean = ~noisy
        with torch.no_grad():
            guess = train_probe(x[clean], trained_on[clean], k)(x).argmax(1)
    elif method == "knn":
        guess = torch.from_numpy(feature_regime.knn_vote(features, trained_on.numpy(), k))
    else:
        probs = out_of_fold(x, trained_on, k)
        guess = torch.from_numpy(probs.argmax(1))
        if method == "cleanlab":
            from cleanlab.filter import find_label_issues

            flagged = torch.from_numpy(find_label_issues(trained_on.numpy(), probs))
            guess = torch.where(flagged, guess, task["given"])
    return torch.where(noisy, guess, task["given"])


def run_emlc(work: Path, features: np.ndarray, paths: list[str]) -> tuple[torch.Tensor, float, dict]:
    """`emlc clean emb.npy --recipe features` in work/ (the view's folder inside the task's)."""
    np.save(work / "emb.npy", features)
    feature_regime.write_feature_task(work.parent, paths)
    for name in ("labels", "clean", "truth"):
        (work.parent / f"features_{name}.csv").replace(work / f"features_{name}.csv")
    out = work / "emlc_run"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "emlc_cli", "clean", str(work / "emb.npy"), "--labels", str(work / "features_labels.csv"),
                    "--clean", str(work / "features_clean.csv"), "--out", str(out), "--recipe", "features", "--overwrite",
                    "--quiet", "--device", "cpu"], check=True)
    seconds = time.perf_counter() - started
    rows = {r["path"]: r["corrected_label"] for r in qm_csv(out / "corrected.csv")}
    classes = sorted(set(rows.values()) | set(r["label"] for r in qm_csv(work / "features_labels.csv")))
    fixed = torch.tensor([classes.index(rows[str(i)]) for i in range(len(paths))])
    return fixed, seconds, json.loads((out / "summary.json").read_text()).get("label_accuracy") or {}


def qm_csv(path: Path) -> list[dict]:
    import csv

    with path.open() as handle:
        return list(csv.DictReader(handle))


def load_cell(args: argparse.Namespace, task: Path) -> dict:
    classes = sorted(d.name for d in (args.cifar / "train").iterdir() if d.is_dir())
    given = {p: label for p, label, _ in read_path_label_csv(task / "labels.csv")}
    paths = sorted(given)
    lab = lambda name: feature_regime.labels_of(task / name, paths, classes)  # noqa: E731
    verified = {p: label for p, label, _ in read_path_label_csv(task / "clean.csv")}
    noisy = torch.tensor([p not in verified for p in paths])
    trained_on = torch.tensor([classes.index(verified.get(p, given[p])) for p in paths])
    return {"classes": len(classes), "class_names": classes, "paths": paths, "given": lab("labels.csv"),
            "truth": lab("truth.csv"), "noisy": noisy, "trained_on": trained_on}


def run_cell(args: argparse.Namespace, caches: dict[str, EmbeddingCache], cell: qm.Cell, seed: int) -> None:
    task_dir = args.work / f"{cell.name}-s{seed}"
    qm.write_task(args, cell, seed, task_dir)
    out = task_dir / "pretrained.json"
    results = json.loads(out.read_text()) if out.is_file() else {"cell": cell.name, "seed": seed, "rows": {}}
    task = load_cell(args, task_dir)
    for view in args.views.split(","):
        features, embed_s = timed(lambda: view_features(caches, view, task["paths"]))
        rates = {n: c.images_per_s for n, c in caches.items() if c.images_per_s}
        for method in args.methods.split(","):
            key = f"{view}/{method}"
            if key in results["rows"] or (method == "emlc" and view not in args.emlc_views.split(",")):
                continue
            print(f"== {cell.name} s{seed} {key}", flush=True)
            results["rows"][key] = measure(method, features, task, task_dir / view.replace("+", "_"))
            results["rows"][key].update(view=view, embed_seconds=round(embed_s, 1), forward_images_per_s=rates)
            out.write_text(json.dumps(results, indent=2, default=float))


def measure(method: str, features: np.ndarray, task: dict, work: Path) -> dict:
    noisy, given, truth = task["noisy"], task["given"], task["truth"]
    if method == "emlc":
        work.mkdir(parents=True, exist_ok=True)
        fixed, seconds, estimate = run_emlc(work, features, task["paths"])
        row = cb.row(method, fixed, given, truth, noisy, None, seconds)
        row["estimate"] = estimate
        return row
    fixed, seconds = timed(lambda: baseline(method, features, task))
    return cb.row(method, fixed, given, truth, noisy, None, seconds)


def timed(work):
    started = time.perf_counter()
    value = work()
    return value, time.perf_counter() - started


def render(work: Path) -> str:
    lines = ["| cell | view | method | corrected acc | change | changes (P / R / F1) | est. given -> corrected (truth) | s "
             "| embedding img/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(work.glob("*-s*/pretrained.json")):
        data = json.loads(path.read_text())
        first = next(iter(data["rows"].values()), None)
        if first is None:
            continue
        lines.append(f"| {data['cell']} s{data['seed']} | | given | {first['given_acc']:.4f} | | | | | |")
        for key, r in data["rows"].items():
            rates = ", ".join(f"{k} {v:.0f}" for k, v in r.get("forward_images_per_s", {}).items())
            lines.append(f"| {data['cell']} s{data['seed']} | {r['view']} | {r['method']} | {r['corrected_acc']:.4f} | "
                         f"{r['corrected_acc'] - r['given_acc']:+.4f} | {r['changed']} ({r['detection_precision']:.2f} / "
                         f"{r['detection_recall']:.2f} / {r['detection_f1']:.2f}) | {estimate(r)} | {r['seconds']:.0f} | {rates} |")
    return "\n".join(lines)


def estimate(r: dict) -> str:
    e = r.get("estimate") or {}
    if not e.get("given") or not e.get("corrected"):
        return ""
    return f"{e['given']['estimate']:.3f} -> {e['corrected']['estimate']:.3f} ({r['given_acc']:.3f} -> {r['corrected_acc']:.3f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 2)[2])
    ap.add_argument("cifar", type=Path, help="CIFAR-10 JPEGs: train/<class>/*.jpg")
    ap.add_argument("work", type=Path, help="task folders and results (the quality_matrix.py layout)")
    ap.add_argument("--real-csv", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/cifar10n-random1.csv")
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "shared/models",
                    help="the folder holding tf_efficientnet_lite0.in1k/ and tf_efficientnet_lite2.in1k/")
    ap.add_argument("--emb", type=Path, default=Path("/tmp/emb"), help="the embedding cache, per backbone and image path")
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--seeds", type=int, default=1, help="at most this many seeds per cell")
    ap.add_argument("--views", default="lite0", help="comma-separated: lite0, lite2, lite0+lite2, each optionally -flip")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--emlc-views", default="lite0,lite2,lite0+lite2", help="the views the emlc method runs on")
    ap.add_argument("--import-run", action="append", default=[], metavar="NAME=RUN",
                    help="make view NAME from the embeddings an `emlc clean --recipe frozen` run kept (e.g. emlc_lite0)")
    ap.add_argument("--results", type=Path, help="write the table into this markdown file")
    ap.add_argument("--table-only", action="store_true")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    caches = {name + ("-mirrored" if m else ""): EmbeddingCache(args.emb, args.models, name, args.cifar, m)
              for name in BACKBONES for m in (False, True)}
    for spec in args.import_run:
        import_run(caches, args, spec)
    for name in {part for view in args.views.split(",") for part in view.removesuffix("-flip").split("+")} - set(caches):
        caches[name] = EmbeddingCache(args.emb, args.models, name, args.cifar)  # imported earlier
    cells = {c.name: c for c in qm.CELLS}
    for name in [] if args.table_only else args.cells.split(","):
        for seed in range(min(cells[name].seeds, args.seeds)):
            run_cell(args, caches, cells[name], seed)
    table = render(args.work)
    print(table)
    if args.results:
        text = args.results.read_text()
        block = f"{MARK_BEGIN}\n{table}\n{MARK_END}"
        head, _, rest = text.partition(MARK_BEGIN)
        args.results.write_text(head + block + rest.partition(MARK_END)[2] if rest else text + "\n" + block + "\n")


if __name__ == "__main__":
    main()
