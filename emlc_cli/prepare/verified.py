"""The verified set, prepared before any training: the dataset read, the verified manifests resolved against it,
coverage warnings, and the stratified holdout that validates every decision."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emlc_cli.models.backbones import BACKBONES, check_model_input
from emlc_cli.data.imagefolder import check_inside
from emlc_cli.data.kinds import load_source
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.data.manifest import read_verified_csv, resolve_clean_rows
from emlc_cli.data.spec import SourceSpec
from emlc_cli.errors import DataError
from emlc_cli.metrics import wilson
from emlc_cli.recipe.schema import Recipe
from emlc_cli.run_folder.layout import manifest_key


@dataclass
class Prepared:
    """Everything validated before the first training step."""

    dataset: LabeledImages
    verified: dict[int, int]
    holdout: list[int]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    picked: set[int] = field(default_factory=set)  # verified because emlc suggested them (read_verified_csv): not a random sample
    filed: set[int] = field(default_factory=set)  # filed under their verified class beside an in-place sample (filed_manifests)

    @property
    def unsampled(self) -> set[int]:
        """Verified images that are no random sample of the labels in DATA: they train, but never measure the noise."""
        return self.picked | self.filed

    @property
    def sampled(self) -> list[int]:
        """The verified images that sample the noise: the only ones whose pairs measure it and that check decisions."""
        unsampled = self.unsampled
        return [i for i in sorted(self.verified) if i not in unsampled]

    @property
    def clean_train(self) -> list[int]:
        held = set(self.holdout)
        return [i for i in sorted(self.verified) if i not in held]

    @property
    def noisy(self) -> list[int]:
        return [i for i in range(len(self.dataset)) if i not in self.verified]

    def describe(self) -> str:
        """`120 images, 3 classes, 18 verified (6 held out for model selection)`."""
        picked = f", {len(self.picked)} of them picked by emlc" if self.picked else ""
        filed = f", {len(self.filed)} filed under their verified class" if self.filed else ""
        return (f"{len(self.dataset)} images, {len(self.dataset.classes)} classes, {len(self.verified)} verified{picked}{filed} "
                f"({len(self.holdout)} held out for model selection)")


def prepare(data: Path | SourceSpec, clean_csv: list[Path], recipe: Recipe, seed: int = 0) -> Prepared:
    """Read and validate the dataset and the verified subset; nothing is trained or written.

    `data` is an image folder, or any source emlc_cli.data.kinds reads (a SourceSpec, which also carries
    `--labels`, or a path / hf:// string)."""
    _validate_backbone(recipe)
    dataset = load_source(data)
    check_model_input(dataset, recipe.model.backbone)
    verified: dict[int, int] = {}
    picked: set[int] = set()
    index = dataset.index_of()
    key = manifest_key(dataset.kind)
    groups: list[list[int]] = []
    for manifest in clean_csv:
        rows, picked_rows = read_manifest(Path(manifest), key)
        for path, _, row in rows:
            if key == "path":
                check_inside(dataset.root, path, Path(manifest), row)
        resolved = resolve_clean_rows(rows, Path(manifest), index, dataset.classes)
        groups.append(sorted(resolved))
        for i, label in resolved.items():
            if verified.setdefault(i, label) != label:
                raise DataError(f"'{dataset.paths[i]}' is verified with conflicting labels across manifests", path=manifest)
        if picked_rows:
            picked |= set(resolve_clean_rows([r for r in rows if r[2] in picked_rows], Path(manifest), index,
                                             dataset.classes))
    _check_enough(verified, dataset, clean_csv, recipe)
    groups = [[i for i in group if i not in picked] for group in groups]
    filed_groups = filed_manifests(groups, verified, dataset.labels)
    filed = {i for k in filed_groups for i in groups[k]}
    sampled = {i: label for i, label in verified.items() if i not in picked and i not in filed}
    holdout = _holdout(sampled, recipe.data.holdout_fraction, seed)
    warnings = _coverage_warnings(verified, dataset.classes) + [
        _filed_warning(clean_csv[k], len(groups[k]), groups, verified, dataset.labels) for k in filed_groups]
    return Prepared(dataset, verified, holdout, warnings, picked=picked, filed=filed)


def _validate_backbone(recipe: Recipe) -> None:
    """emlc's own networks without weights need no check (and no torch); anything else is resolved now."""
    model = recipe.model
    if model.backbone in BACKBONES and model.weights in ("none", ""):
        return
    from emlc_cli.models.build import validate_backbone

    validate_backbone(model.backbone, model.weights)


FILED_CHANCE = 0.05  # a manifest agreeing everywhere is read as filed when an in-place sample would do so this rarely


def filed_manifests(groups: list[list[int]], verified: dict[int, int], labels: np.ndarray) -> list[int]:
    """The manifests (indices into `groups`, each a manifest's verified images that emlc did not pick) whose images
    all carry their verified label in DATA while other manifests show disagreements. The disagreeing ones were
    verified where they were filed (in place) and measure the noise; a manifest that, at the noise rate those show
    (its 95 % lower bound), would agree everywhere with a chance under FILED_CHANCE was filed under the verified
    class instead, and counting its images as agreeing pairs would read the labels as more accurate than they are."""
    wrong = [sum(int(labels[i] != verified[i]) for i in group) for group in groups]
    shown = [k for k, w in enumerate(wrong) if w]
    if not shown:
        return []
    rate_low = wilson(sum(wrong[k] for k in shown), sum(len(groups[k]) for k in shown))[0]
    return [k for k, group in enumerate(groups) if group and not wrong[k] and (1 - rate_low) ** len(group) < FILED_CHANCE]


def _filed_warning(manifest: Path, n: int, groups: list[list[int]], verified: dict[int, int], labels: np.ndarray) -> str:
    disagreeing = [i for group in groups for i in group if labels[i] != verified[i]]
    return (f"{manifest}: all {n} of its verified images carry their verified label in the data, while other manifests "
            f"correct {len(disagreeing)} labels: read as filed under their verified class, so they train the teacher "
            f"but do not measure the noise")


def _check_enough(verified: dict[int, int], dataset: LabeledImages, clean_csv: list[Path], recipe: Recipe) -> None:
    needed = max(4, len(dataset.classes))
    if len(verified) < needed:
        where = ", ".join(map(str, clean_csv))
        raise DataError(f"{len(verified)} verified samples; at least {needed} are needed (one per class, {len(dataset.classes)} classes)", path=where)
    if len(verified) >= len(dataset):
        raise DataError("every image is verified: there is nothing left to clean", path=dataset.root)


def _coverage_warnings(verified: dict[int, int], classes: list[str]) -> list[str]:
    counts = np.bincount(np.fromiter(verified.values(), dtype=np.int64), minlength=len(classes))
    return [
        f"class '{classes[c]}' has no verified sample: the teacher learns it only from noisy labels and the holdout cannot score it"
        for c in np.flatnonzero(counts == 0)
    ]


HOLDOUT_FLOOR = 30  # images the holdout grows to on small verified sets (up to a third of them): see evidence.py


def _holdout(verified: dict[int, int], fraction: float, seed: int) -> list[int]:
    """A stratified slice of the verified set (at least one per class that has two or more). On small verified
    sets the slice grows to HOLDOUT_FLOOR images, at most a third of the set, so that corrections can be checked."""
    if fraction <= 0:
        return []
    fraction = max(fraction, min(1 / 3, HOLDOUT_FLOOR / max(1, len(verified))))
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in sorted(verified.items()):
        by_class.setdefault(label, []).append(i)
    held: list[int] = []
    for members in by_class.values():
        if len(members) >= 2:
            take = min(len(members) - 1, max(1, round(fraction * len(members))))
            held += rng.choice(members, size=take, replace=False).tolist()
    return sorted(held)


def read_manifest(path: Path, key: str) -> tuple[list[tuple[str, str, int]], set[int]]:
    """A verified-set manifest: a key,label[,picked] CSV, or a Label Studio JSON export of tasks emlc exported;
    its rows and the row numbers of those emlc picked. Every Label Studio decision counts as picked: the tasks
    come in emlc's order, to-verify first."""
    if path.suffix.lower() == ".json":
        from emlc_cli.export import label_studio as labelstudio

        rows = labelstudio.read_decisions(path)
        return rows, {number for _, _, number in rows}
    return read_verified_csv(path, key=key)
