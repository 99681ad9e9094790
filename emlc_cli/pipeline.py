"""The public API: clean() and evaluate_*(). The one place the stages are wired together:
recipe -> data source -> tensors -> trainer -> corrections -> outputs."""
from __future__ import annotations

import contextlib
import logging
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from emlc_cli._version import __version__
from emlc_cli.prepare import advice
from emlc_cli.decide import decision
from emlc_cli.runtime import distributed
from emlc_cli.train import frozen as features, saved_state, small_pool
from emlc_cli import metrics
from emlc_cli.run_folder import layout as run_folder, log as runlog
from emlc_cli.train import resume as resume_checks
from emlc_cli.train.checkpoints import Checkpoint, saved_folds, train
from emlc_cli.cache.images import image_cache
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.cache.batches import TensorSet
from emlc_cli.data.spec import SourceSpec, as_spec
from emlc_cli.errors import DataError, OutputError
from emlc_cli.run_folder.writer import NoOutputs, RunDir, check_out_dir, load_training_state
from emlc_cli.preprocessing import Preprocessing
from emlc_cli.recipe.schema import Recipe, dump_recipe
from emlc_cli.runtime.device import resolve_device, seed_everything
from emlc_cli.prepare.same_inputs import check_same_on_every_rank
from emlc_cli.runtime.timing import Stopwatch
from emlc_cli.prepare.verified import Prepared, prepare  # noqa: F401 - prepare is part of the public API
from emlc_cli.train.trainer import MetaTrainer
from emlc_cli.models.backbones import FEATURE_HEAD
from emlc_cli.models.build import ImageInput, image_input

log = logging.getLogger(__name__)
Event = Callable[[Any], None]


@dataclass
class CleanResult:
    out: Path
    summary: dict[str, Any]


def clean(data: Path | SourceSpec, clean_csv: list[Path], out: Path, recipe: Recipe, device: str = "auto", seed: int = 0,
          overwrite: bool = False, on_event: Event | None = None, resume: bool = False, strict: bool = False,
          prepared: Prepared | None = None) -> CleanResult:
    """Run EMLC on `data` (a path, or a SourceSpec that also carries `--labels`) with the verified subset in
    `clean_csv`; write the run folder `out`.

    With `resume`, the interrupted run continues if its inputs (data, verified set, recipe, seed) are unchanged
    (see resume.py); any change is refused. Under torchrun every
    process calls this; they share the work and rank 0 alone writes `out`. `prepared` is `prepare()`'s result
    when the caller has validated the inputs already (emlc clean does, before torch is imported)."""
    torch_device = resolve_device(device)
    initialised_here = not distributed.world().distributed and distributed.launched()
    world = distributed.init(torch_device)
    try:
        return _clean(as_spec(data), clean_csv, Path(out), recipe, torch_device, seed, overwrite, on_event, resume, strict,
                      prepared)
    finally:
        if initialised_here and world.distributed:
            distributed.shutdown()


def _clean(data: SourceSpec, clean_csv: list[Path], out: Path, recipe: Recipe, torch_device: torch.device, seed: int,
           overwrite: bool, on_event: Event | None, resume: bool, strict: bool, prepared: Prepared | None = None) -> CleanResult:
    started, world, watch = time.perf_counter(), distributed.world(), Stopwatch()
    emit = on_event or (lambda event: None)
    saved = distributed.on_main(lambda: _check_and_load_state(out, data, clean_csv, overwrite, resume))
    if prepared is None:
        with watch("validation"):
            prepared = prepare(data, clean_csv, recipe, seed)
        prepared.seconds = watch["validation"]
    inputs_now = _fingerprint(prepared, recipe, seed)
    check_same_on_every_rank(prepared, inputs_now)
    if saved is not None:
        resume_checks.check_same_inputs(saved["inputs"], inputs_now)
    for warning in prepared.warnings if world.is_main else []:
        log.warning(warning)
    emit(prepared)
    seed_everything(seed)
    with _model_inputs(prepared, recipe, strict, torch_device, out, watch, emit) as inputs:
        trained = features.head_recipe(recipe) if inputs.encoder is not None else recipe
        if trained.model.backbone == FEATURE_HEAD:
            trained, inputs.batch_note = small_pool.for_pool(trained, len(inputs.noisy_idx), world.size)
            if inputs.batch_note and world.is_main:
                log.info("heads on a small pool: %s", inputs.batch_note)
        trainer = MetaTrainer(trained, len(prepared.dataset.classes), *_tensor_sets(prepared, inputs.images, inputs.noisy_idx),
                              device=torch_device, seed=seed, preprocessing=inputs.image_input.preprocessing)
        if saved is not None:  # before the staging folder is opened: a refused state is left as it was
            state_file = run_folder.staging_path(out) / run_folder.STATE_FILE
            saved_state.check_trainer_state(saved["trainer"], state_file, trainer)
        with (RunDir(out, resume=resume) if world.is_main else NoOutputs(out)) as run:
            with runlog.recording(run.path if world.is_main else None, data.command, prepared):
                if saved is not None:
                    _load_saved(trainer, saved, run.path)
                checkpoint = Checkpoint(run, trainer, recipe, seed, inputs_now, saved_folds(saved))
                summary = _train_and_write(run, trainer, prepared, inputs, recipe, emit, watch, checkpoint)
                summary["wall_seconds"] = round(time.perf_counter() - started, 2)
                summary["timing"] = _timing(watch, trainer, summary["wall_seconds"])
                _advise_pretrained(summary, recipe, data, prepared, out)
                run.write_json(run_folder.SUMMARY, summary)
            final = run.commit()
    return CleanResult(final, summary)


@dataclass
class _Inputs:
    """What the trainer reads: the decoded cache (or frozen-backbone features) and which rows are trainable."""

    images: torch.Tensor
    skipped: dict[int, str]
    noisy_idx: list[int]
    image_input: ImageInput  # how the images were prepared (and, for a trained timm backbone, its rebuild record)
    encoder: features.Encoder | None = None
    embedding: dict[str, Any] | None = None  # the embedding pass: images embedded, reused from the store, seconds
    batch_note: str | None = None  # MLP heads on a small pool: the smaller batches they trained on, and why


def _train_and_write(run: RunDir | NoOutputs, trainer: MetaTrainer, prepared: Prepared, inputs: _Inputs, recipe: Recipe,
                     emit: Event, watch: Stopwatch, checkpoint: Checkpoint) -> dict[str, Any]:
    with watch("training"):
        train_seconds = train(trainer, checkpoint, emit)
    with watch("corrections"):
        result = decision.corrections_on_main(trainer, prepared, inputs.images, inputs.noisy_idx, recipe, checkpoint.seed,
                                              emit, checkpoint.fold_hooks())
    with watch("finetune"):
        _finetune(trainer, inputs.images, inputs.noisy_idx, result, recipe, emit)
    summary = _summary(prepared, result, trainer, inputs.skipped, recipe, trainer.device, train_seconds, inputs.noisy_idx)
    summary["finetune_kept"] = trainer.finetune_kept
    summary["finetune_holdout_accuracy"] = trainer.finetune_holdout
    summary["embedding"] = inputs.embedding
    summary["batch_note"] = inputs.batch_note
    summary["processes"] = {"count": trainer.world.size, "backend": trainer.world.backend or None,
                            "max_weight_difference": _max_weight_difference(trainer)}
    with watch("outputs"):
        _write_outputs(run, prepared, result, trainer, recipe, summary, inputs)
    return summary


@contextlib.contextmanager
def _model_inputs(prepared: Prepared, recipe: Recipe, strict: bool, device: torch.device, out: Path,
                  watch: Stopwatch, emit: Event) -> Iterator[_Inputs]:
    """The decoded image cache (see cache/images.py), or, under a frozen backbone, the images' embeddings (decoded
    and embedded a batch at a time, kept in the embedding store: train/frozen.py)."""
    ds, data = prepared.dataset, recipe.data
    if recipe.model.freeze_backbone:
        with watch("embed"):
            encoder = features.frozen_encoder(recipe, device)
            embedded = features.embed_views(ds, encoder, device, data.decode_workers, emit)
        skipped = _check_unreadable(prepared, embedded.unreadable, strict)
        yield _Inputs(embedded.features.to(device), skipped, [i for i in prepared.noisy if i not in skipped],
                      ImageInput(encoder.preprocessing), encoder, embedded.stats)
        return
    m = recipe.model
    seen = image_input(m.backbone, m.weights, m.input_size, data.image_size, data.resize)
    pre = seen.preprocessing
    with contextlib.ExitStack() as stack:  # an mmap cache lives until the run is written
        with watch("decode"):
            images, bad = stack.enter_context(image_cache(ds, pre.size, data.decode_workers, data.cache, device, out.parent,
                                                          pre.resize, pre.crop_pct, pre.interpolation))
        skipped = _check_unreadable(prepared, bad, strict)
        yield _Inputs(images, skipped, [i for i in prepared.noisy if i not in skipped], seen)


def _timing(watch: Stopwatch, trainer: MetaTrainer, wall: float) -> dict[str, float]:
    """Seconds per stage; `iterations` = the training steps themselves (their batch preparation included), and
    `wall_over_iterations` what everything else (loading, evaluation, checkpoints, outputs) adds to them."""
    steps = trainer.watch
    iterations = sum(v for k, v in steps.items() if k.endswith("_steps") or k == "batches")
    return {**watch.rounded(), **{f"training.{k}": v for k, v in steps.rounded().items()},
            "iterations": round(iterations, 2), "wall_over_iterations": round(wall / max(iterations, 1e-9), 3)}


def _check_and_load_state(out: Path, data: SourceSpec, clean_csv: list[Path], overwrite: bool, resume: bool) -> dict | None:
    reads = [(Path(p), "the input") for p in (*clean_csv, data.labels_csv) if p is not None]
    check_out_dir(out, data, overwrite, resume, protect=reads)
    if not resume:
        return None
    path = run_folder.staging_path(out) / run_folder.STATE_FILE
    return resume_checks.check_state(load_training_state(path), path)


def _fingerprint(prepared: Prepared, recipe: Recipe, seed: int) -> dict[str, Any]:
    ds = prepared.dataset
    return resume_checks.fingerprint(ds.paths, ds.labels, ds.classes, prepared.verified, recipe.to_dict(), seed,
                                     prepared.unsampled)


def _load_saved(trainer: MetaTrainer, saved: dict[str, Any], where: Path) -> None:
    try:
        trainer.load_training_state(saved["trainer"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # a tampered or foreign state
        raise OutputError(f"{where / run_folder.STATE_FILE}: cannot be resumed ({type(err).__name__}: {str(err)[:120]}); "
                          f"{resume_checks.START_AFRESH}") from None


def _max_weight_difference(trainer: MetaTrainer) -> float:
    """0.0 when every rank holds rank 0's student and teacher (checked once, after training)."""
    trainer.sync_buffers()
    return max(distributed.max_difference(trainer.student), distributed.max_difference(trainer.teacher))


def _finetune(trainer: MetaTrainer, images: torch.Tensor, noisy_idx: list[int], result: "decision.Result", recipe: Recipe,
              emit: Event) -> None:
    """Optional: the student's last epochs on the corrected labels (the labels themselves are already final)."""
    if recipe.train.finetune_epochs <= 0 or not noisy_idx:
        return
    data = TensorSet(images, torch.from_numpy(result.labels[noisy_idx]), torch.as_tensor(noisy_idx, dtype=torch.long))
    for report in trainer.finetune(data, recipe.train.finetune_epochs):
        emit(report)


def _check_unreadable(prepared: Prepared, bad: list[tuple[int, str]], strict: bool) -> dict[int, str]:
    ds = prepared.dataset
    if strict and bad:
        raise DataError(f"unreadable image ({bad[0][1]}); {len(bad)} in all (drop --strict to skip them)", path=ds.root / ds.paths[bad[0][0]])
    skipped = dict(bad)
    bad_clean = [ds.paths[i] for i in skipped if i in prepared.verified]
    if bad_clean:
        raise DataError(f"verified image cannot be read: {skipped[ds.index_of()[bad_clean[0]]]}", path=ds.root / bad_clean[0])
    return skipped


def _tensor_sets(prepared: Prepared, images: torch.Tensor, noisy_idx: list[int]) -> tuple[TensorSet, TensorSet, TensorSet]:
    labels = torch.from_numpy(prepared.dataset.labels)

    def subset(indices: list[int], lab: torch.Tensor) -> TensorSet:
        return TensorSet(images, lab, torch.as_tensor(indices, dtype=torch.long))

    verified = lambda ids: torch.as_tensor([prepared.verified[i] for i in ids], dtype=torch.long)  # noqa: E731
    noisy = subset(noisy_idx, labels[torch.as_tensor(noisy_idx, dtype=torch.long)])
    return noisy, subset(prepared.clean_train, verified(prepared.clean_train)), subset(prepared.holdout, verified(prepared.holdout))


def _write_outputs(run: RunDir | NoOutputs, prepared: Prepared, result: decision.Result, trainer: MetaTrainer, recipe: Recipe,
                   summary: dict, inputs: _Inputs) -> None:
    ds = prepared.dataset
    skipped = set(summary["skipped"])
    rows = [
        [path, ds.classes[ds.labels[i]], ds.classes[result.labels[i]], f"{result.confidence[i]:.4f}",
         int(result.labels[i] != ds.labels[i]), "clean" if i in prepared.verified else "noisy"]
        for i, path in enumerate(ds.paths) if path not in skipped
    ]
    run.write_csv(run_folder.CORRECTED, run_folder.CORRECTED_COLUMNS, rows)
    kept = [i for i, path in enumerate(ds.paths) if path not in skipped]
    run.write_array(run_folder.LABELS, np.asarray(ds.labels, dtype=np.int64)[kept])
    if result.probs is not None:
        run.write_array(run_folder.PROBS, result.probs[kept])
    in_features = int(trainer.noisy.images.shape[1]) if trainer.noisy.images.ndim == 2 else 0
    encoder = inputs.encoder
    config = _model_config(ds.classes, trainer.recipe, inputs.image_input.preprocessing, in_features)
    if inputs.image_input.timm is not None:  # a trained timm backbone: rebuilt from this record, no download
        config["timm"] = inputs.image_input.timm
    if encoder is not None:  # heads over frozen features: the backbone ships beside them, so the run is self-contained
        config = {**config, "frozen_backbone": encoder.record}
        run.write_model(run_folder.BACKBONE, encoder.module, {**config, "role": "frozen backbone"})
    run.write_model(run_folder.STUDENT, trainer.student, {**config, "role": "student"})
    run.write_model(run_folder.TEACHER, trainer.teacher, {**config, "role": "teacher+enhancer"})
    run.write_csv(run_folder.TO_VERIFY, run_folder.TO_VERIFY_COLUMNS, result.to_verify)
    run.write_json(run_folder.SOURCE, _source_record(ds))
    run.write_text(run_folder.RECIPE, dump_recipe(recipe))


def _advise_pretrained(summary: dict[str, Any], recipe: Recipe, data: SourceSpec, prepared: Prepared, out: Path) -> None:
    """A model trained from scratch (not from pretrained weights, frozen or fine-tuned) too weak to correct:
    summary.json (and the console) say that a pretrained backbone usually corrects far more, with the exact command."""
    if not (summary["label_accuracy"] or {}).get("too_weak") or recipe.model.weights not in ("none", "") \
            or prepared.dataset.features is not None:
        return
    summary["pretrained_hint"] = advice.pretrained_hint(data.command, out)
    summary["warnings"].append(summary["pretrained_hint"])


def _too_weak_warning(report: dict[str, Any]) -> str:
    verify = ("verify a random sample, kept where it is" if report.get("all_picked") else
              f"verify more images, starting with {run_folder.TO_VERIFY}")
    return f"labels left as given: {report['reason']}; {verify}"


def _source_record(ds: LabeledImages) -> dict[str, Any]:
    """Where the run's data came from, so review/push/export can find the images again (read-only)."""
    return {**ds.origin, "kind": ds.kind, "root": str(Path(ds.root).resolve()), "classes": ds.classes}


def _model_config(classes: list[str], recipe: Recipe, preprocessing: Preprocessing, in_features: int = 0) -> dict[str, Any]:
    """What a model is rebuilt from, and how its images are prepared (input_size, resize, crop_pct, interpolation,
    mean, std: evaluate, predict and the API apply them)."""
    m, pre = recipe.model, preprocessing.to_dict()
    return {
        "architecture": m.backbone, "width": m.width, "small_stem": m.small_stem, "num_classes": len(classes),
        "in_features": in_features, "classes": classes, "input_size": pre.pop("size"), **pre,
        "enhancer_hidden": m.enhancer_hidden, "label_embedding": m.label_embedding, "emlc_version": __version__,
    }


def _summary(prepared: Prepared, result: decision.Result, trainer: MetaTrainer, skipped: dict[int, str], recipe: Recipe,
             device: torch.device, train_seconds: float, noisy_idx: list[int]) -> dict[str, Any]:
    ds, classes = prepared.dataset, prepared.dataset.classes
    given, fixed = ds.labels[noisy_idx], result.labels[noisy_idx]
    changed = given != fixed
    steps = recipe.train.epochs * trainer.steps_per_epoch
    return {
        "images": len(ds), "noisy": len(noisy_idx), "verified": len(prepared.verified), "verified_picked": len(prepared.picked),
        "verified_filed": len(prepared.filed),
        "verified_train": len(prepared.clean_train), "holdout": len(prepared.holdout),
        "holdout_paths": [ds.paths[i] for i in prepared.holdout], "validation_seconds": round(prepared.seconds, 2),
        "changed": int(changed.sum()),
        "estimated_noise_rate": result.evidence["noise_rate"] if result.evidence else float(changed.mean()) if len(changed) else 0.0,
        "label_accuracy": result.evidence or None,
        "changed_per_class": {classes[c]: int(changed[given == c].sum()) for c in range(len(classes))},
        "classes": classes, "change_matrix": metrics.change_matrix(given, fixed, len(classes)),
        "epochs": [{**vars(e), "epoch": e.epoch + 1} for e in trainer.history],  # numbered from 1, as the console
        "best_holdout_score": trainer.best_score,
        "temperature": result.temperature, "rule": recipe.correct.rule, "cross_fit": result.cross_fit,
        "cross_fit_reason": result.cross_fit_reason,
        "warnings": prepared.warnings + ([_too_weak_warning(result.evidence)] if result.evidence.get("too_weak") else []),
        "skipped": {ds.paths[i]: reason for i, reason in skipped.items()}, "ignored_files": ds.ignored_files,
        "train_seconds": round(train_seconds, 2),
        "images_per_s": round(steps * trainer.recipe.train.batch_size / max(train_seconds, 1e-9), 1),
        "device": str(device), "recipe": recipe.origin or recipe.name,
        "peak_device_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None,
        "versions": {"emlc": __version__, "torch": torch.__version__, "python": sys.version.split()[0], "platform": platform.platform()},
    }
