"""MetaTrainer: warm-up, then the EMLC meta step, yielding small reports to the caller."""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emlc_cli.runtime import distributed
from emlc_cli.train import meta, eval_pass as prediction, optimizers, tangents
from emlc_cli.cache.batches import BatchMaker, ShuffledSampler, TensorSet
from emlc_cli.errors import RecipeError, TrainingError
from emlc_cli.models.build import batch_stats_only, build_classifier, build_teacher, traits
from emlc_cli.preprocessing import Preprocessing
from emlc_cli.recipe.schema import Recipe
from emlc_cli.train.events import EpochReport, StepReport
from emlc_cli.runtime.timing import Stopwatch

log = logging.getLogger(__name__)
# torch.func's first forward-mode call goes through a deprecated torch.jit.script internally; not ours to fix
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)


class MetaTrainer:
    def __init__(self, recipe: Recipe, num_classes: int, noisy: TensorSet, clean: TensorSet, holdout: TensorSet,
                 device: torch.device, seed: int = 0, preprocessing: Preprocessing | None = None) -> None:
        """`preprocessing`: the images' mean/std (the model's own for a timm backbone; ImageNet's by default)."""
        self.recipe, self.num_classes, self.device = recipe, num_classes, device
        self.preprocessing = preprocessing or Preprocessing(recipe.data.image_size, recipe.data.resize)
        self.noisy, self.clean, self.holdout = noisy, clean, holdout
        self.world = distributed.world()
        self._check_batch_sizes()
        # the shuffles are shared by all ranks (each takes its slice of the same global batch);
        # augmentation and mixup draw from a per-rank generator
        self.shuffle_generator = torch.Generator().manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed + 7919 * (self.world.rank + 1))
        m = recipe.model
        in_features = int(noisy.images.shape[1]) if noisy.images.ndim == 2 else 0
        self.student = build_classifier(m.backbone, num_classes, m.width, m.small_stem, m.weights, in_features,
                                        m.input_size).to(device)
        self.teacher = build_teacher(m.backbone, num_classes, m.width, m.small_stem, m.weights,
                                     m.enhancer_hidden, m.label_embedding, in_features, m.input_size).to(device)
        kind = traits(m.backbone)
        self.channels_last = noisy.images.ndim == 4 and (device.type == "cuda" or kind.channels_last_on_cpu)
        # bf16 autocast on CUDA for the heavy forwards; the look-ahead gradient and the JVP stay in fp32
        self.autocast = lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
        if self.channels_last:
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)
        distributed.broadcast_state_(self.teacher)
        self.student_train = self._compiled(self._data_parallel(self.student))
        self.teacher_forward = self._compiled(self.teacher.classifier.features_and_logits)
        # CPU float32 with a plain layer stack: J g from the student step's own activations (see tangents.py);
        # a compiled student would not call the recording hooks
        recorded = kind.recorded_jvp and device.type == "cpu" and recipe.train.compile == "off"
        self.tangent_chain = tangents.layer_chain(self.student) if recorded else None
        pre = self.preprocessing
        self.batches = BatchMaker(device, recipe.data.augment, self.channels_last, mean=pre.mean, std=pre.std)
        self.eval_batches = BatchMaker(device, "none", self.channels_last, mean=pre.mean, std=pre.std)
        self.lr_factors = optimizers.lr_factors(self.student, recipe.train.backbone_lr_factor)
        self.steps_per_epoch = self._steps_per_epoch()
        self.student_opt, self.teacher_opt = self._optimizers()
        self.best_state: dict | None = None
        self.best_score = -1.0
        self.history: list[EpochReport] = []
        self.noisy_sampler = ShuffledSampler(len(noisy), recipe.train.batch_size)
        self.clean_sampler = ShuffledSampler(len(clean), recipe.train.clean_batch_size, endless=True)
        self.epoch, self.step = 0, 0  # where run() starts: the next step to take
        self.stop_requested = False
        self.finetune_kept: bool | None = None  # None: no fine-tune ran
        self.finetune_holdout: tuple[float, float] | None = None  # holdout accuracy before, after
        self.watch = Stopwatch()  # batches, warmup_steps, meta_steps, finetune_steps, evaluation, checkpoints

    def _check_batch_sizes(self) -> None:
        """Recipe batch sizes are global: each of N processes takes 1/N of every batch."""
        n, t, k = self.world.size, self.recipe.train, self.recipe.meta.steps
        if t.batch_size % (n * k):
            raise RecipeError(f"{t.batch_size} must be divisible by {n} processes x meta.steps {k}", key="train.batch_size")
        if t.clean_batch_size % n or t.clean_batch_size // n < 2:
            raise RecipeError(f"{t.clean_batch_size} must split into {n} per-process batches of 2 or more",
                              key="train.clean_batch_size")

    def _data_parallel(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel for the student's plain SGD steps (its hooks average the gradients during
        backward); the clean gradient and the JVP call the bare module and are averaged by hand."""
        if not self.world.distributed:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def _compiled(self, fn):
        """train.compile: the heavy training forwards through torch.compile (the look-ahead's functional calls
        and the JVP stay eager)."""
        mode = self.recipe.train.compile
        return fn if mode == "off" else torch.compile(fn, mode=mode)

    def _mine(self, global_batch: Tensor) -> Tensor:
        """This rank's slice of a batch drawn identically on every rank."""
        per = len(global_batch) // self.world.size
        return global_batch[self.world.rank * per: (self.world.rank + 1) * per]

    def _steps_per_epoch(self) -> int:
        steps = max(1, len(self.noisy) // self.recipe.train.batch_size)
        cap = self.recipe.train.max_steps_per_epoch
        return min(steps, cap) if cap else steps

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        return optimizers.student_and_teacher(self.student, self.teacher, self.recipe.train)

    def _lr_factor(self, step: int, total: int) -> float:
        kind = self.recipe.train.schedule
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / max(1, total)))
        if kind == "step":
            return 0.1 ** sum(step >= total * f for f in (0.5, 0.75))
        return 1.0

    def _set_lrs(self, step: int) -> float:
        t = self.recipe.train
        total = t.epochs * self.steps_per_epoch
        eta = t.student_lr * self._lr_factor(step, total)
        optimizers.scale_lrs(self.student_opt, eta)
        warm = self.recipe.meta.warmup_epochs * self.steps_per_epoch
        optimizers.scale_lrs(self.teacher_opt, t.teacher_lr * self._lr_factor(max(0, step - warm), max(1, total - warm)))
        return eta

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> Iterator[StepReport | EpochReport]:
        """Train from (self.epoch, self.step) to the end; stops after a step when stop_requested is set."""
        r = self.recipe
        while self.epoch < r.train.epochs:
            phase = "warmup" if self.epoch < r.meta.warmup_epochs else "meta"
            if self.step == 0:
                if phase == "meta" and self.epoch == r.meta.warmup_epochs and self.epoch > 0:
                    self._teacher_from_student()
                self.noisy_sampler.new_pass(self.shuffle_generator)
            started = time.perf_counter()
            yield from self._epoch(phase)
            if self.stop_requested:
                return
            report = self._end_epoch(self.epoch, phase, time.perf_counter() - started)
            self.epoch, self.step = self.epoch + 1, 0  # before yielding: a state saved now resumes at the next epoch
            yield report
        if self.best_state is not None:
            self.load_state(self.best_state)

    def _epoch(self, phase: str) -> Iterator[StepReport]:
        r = self.recipe
        started, seen = time.perf_counter(), 0
        self.student.train(), self.teacher.train()
        while self.step < self.steps_per_epoch and not self._agreed_stop():
            with self.watch("batches"):
                noisy_idx = self._mine(self.noisy_sampler.next(self.shuffle_generator))
                xn, yn = self._batch(self.noisy, noisy_idx), self.noisy.labels[noisy_idx].to(self.device)
                xc, yc = self._clean_batch()
            eta = self._set_lrs(self.epoch * self.steps_per_epoch + self.step)
            with self.watch(f"{phase}_steps"):
                if phase == "warmup":
                    s_loss, t_loss = self.warmup_step(xn, yn, xc, yc), 0.0
                else:
                    s_loss, t_loss = self.meta_step(xn, yn, xc, yc, eta)
            self.step += 1
            seen += len(noisy_idx) * self.world.size
            rate = seen / max(1e-9, time.perf_counter() - started)
            yield StepReport(self.epoch, r.train.epochs, self.step, self.steps_per_epoch, phase, s_loss, t_loss, rate)

    def finetune(self, data: TensorSet, epochs: int) -> Iterator[StepReport]:
        """The student's last pass: cross-entropy on the final corrected labels (hard), at train.finetune_lr_factor
        (0.1) of the student's learning rate, cosine to zero. Kept unless the verified holdout gets worse by more
        than its standard error: the student it replaces is the epoch that holdout picked as best, so its score
        there is optimistic, and a strict `>=` would reject fine-tunes that do not hurt."""
        before, baseline = copy.deepcopy(self.student.state_dict()), self._holdout_student_accuracy()
        t = self.recipe.train
        sampler = ShuffledSampler(len(data), t.batch_size, endless=True)
        steps, started = epochs * self.steps_per_epoch, time.perf_counter()
        for step in range(steps):
            with self.watch("batches"):
                idx = self._mine(sampler.next(self.shuffle_generator))
                batch = (self._batch(data, idx), data.labels[idx].to(self.device), *self._clean_batch())
            optimizers.scale_lrs(self.student_opt, t.finetune_lr_factor * t.student_lr * self._lr_factor(step, steps))
            with self.watch("finetune_steps"):
                loss = self.warmup_step(*batch)
            rate = (step + 1) * len(idx) * self.world.size / max(1e-9, time.perf_counter() - started)
            yield StepReport(step // self.steps_per_epoch, epochs, step % self.steps_per_epoch + 1, self.steps_per_epoch,
                             "finetune", loss, 0.0, rate)
        distributed.broadcast_state_(self.student, buffers_only=True)
        after, n = self._holdout_student_accuracy(), max(1, len(self.holdout))
        self.finetune_kept = after >= baseline - math.sqrt(baseline * (1 - baseline) / n)
        self.finetune_holdout = (baseline, after)
        if not self.finetune_kept:
            self.student.load_state_dict(before)

    def _clean_batch(self) -> tuple[Tensor, Tensor]:
        idx = self._mine(self.clean_sampler.next(self.shuffle_generator))
        return self._batch(self.clean, idx), self.clean.labels[idx].to(self.device)

    def _holdout_student_accuracy(self) -> float:
        if not len(self.holdout):
            return 0.0
        preds = self.predict(self.holdout)
        return float((preds["student_probs"].argmax(1) == self.holdout.labels.numpy()).mean())

    def _batch(self, data: TensorSet, idx: Tensor) -> Tensor:
        return self.batches(data.take(idx), train=True, generator=self.generator)

    # ---- steps ---------------------------------------------------------------------------------
    def warmup_step(self, xn: Tensor, yn: Tensor, xc: Tensor, yc: Tensor) -> float:
        """Plain cross-entropy on given + verified labels (with mixup when the recipe asks)."""
        x = torch.cat([xn, xc])
        targets = F.one_hot(torch.cat([yn, yc]), self.num_classes).float()
        x, targets = meta.mixup(x, targets, self.recipe.meta.mixup_alpha, self.generator)
        with self.autocast():
            loss = meta.soft_cross_entropy(self.student_train(x).float(), targets)
        self._check_finite("warm-up student loss", loss)
        self.student_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.student_opt.step()
        return float(loss.detach())

    def meta_step(self, xn: Tensor, yn: Tensor, xc: Tensor, yc: Tensor, eta: float) -> tuple[float, float]:
        """One EMLC step: K student steps on corrected targets, then the teacher's meta update."""
        cfg, half = self.recipe.meta, xc.shape[0] // 2
        with self.autocast():
            features, logits = self.teacher_forward(torch.cat([xn, xc]))
        features, logits = features.float(), logits.float()
        fn, fc, ln, lc = features[: len(xn)], features[len(xn):], logits[: len(xn)], logits[len(xn):]
        targets = meta.corrected_targets(ln, self.teacher.enhancer(fn, yn), yn)
        adversarial = meta.adversarial_labels(lc[:half], yc[:half])
        retain = meta.retain_loss(self.teacher.enhancer(fc[:half], yc[:half]), self.teacher.enhancer(fc[:half], adversarial))
        extra = (xc[half:], F.one_hot(yc[half:], self.num_classes).float()) if cfg.mix_clean else None
        s_loss, target_grad = self._student_steps(xn, targets.detach(), extra, xc, yc, eta)
        t_loss = meta.teacher_loss(self._clean_ce(lc, xc, yc), retain, meta.meta_term(target_grad, targets), cfg.retain_weight)
        t_loss = t_loss + self._self_training(ln, targets)
        self._check_finite("teacher loss", t_loss)
        self.teacher_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        distributed.average_gradients_(self.teacher)
        self.teacher_opt.step()
        return s_loss, float(t_loss.detach())

    def _clean_ce(self, clean_logits: Tensor, xc: Tensor, yc: Tensor) -> Tensor:
        alpha = self.recipe.meta.mixup_alpha
        if alpha <= 0:
            return F.cross_entropy(clean_logits, yc)
        x, t = meta.mixup(xc, F.one_hot(yc, self.num_classes).float(), alpha, self.generator)
        return meta.soft_cross_entropy(self.teacher.classifier(x), t)

    def _self_training(self, noisy_logits: Tensor, targets: Tensor) -> Tensor:
        threshold = self.recipe.meta.self_train_threshold
        if threshold <= 0:
            return noisy_logits.new_zeros(())
        confidence, pseudo = targets.detach().max(-1)
        mask = (confidence >= threshold).float()
        per_row = F.cross_entropy(noisy_logits, pseudo, reduction="none")
        return (per_row * mask).sum() / max(1.0, float(mask.numel()))

    def _student_steps(self, xn: Tensor, targets: Tensor, extra: tuple[Tensor, Tensor] | None,
                       xc: Tensor, yc: Tensor, eta: float) -> tuple[float, Tensor]:
        """K SGD steps on chunks of the noisy batch; returns the loss and d(clean loss)/d(targets)."""
        k_steps = self.recipe.meta.steps
        params = dict(self.student.named_parameters())
        saved, losses = [], []
        for x_chunk, t_chunk in zip(xn.chunk(k_steps), targets.chunk(k_steps)):
            inputs, soft = (torch.cat([x_chunk, extra[0]]), torch.cat([t_chunk, extra[1]])) if extra else (x_chunk, t_chunk)
            before = {n: p.detach().clone() for n, p in params.items()}
            with self.autocast(), self._recording() as recorded:
                loss = meta.soft_cross_entropy(self.student_train(inputs).float(), soft)
            self._check_finite("student loss", loss)
            self.student_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.student_opt.step()
            saved.append((before, inputs, len(x_chunk), recorded))
            losses.append(loss.detach())
        with batch_stats_only(self.student):
            clean_loss = F.cross_entropy(self.student(xc), yc)
            clean_grad = dict(zip(params, torch.autograd.grad(clean_loss, list(params.values()))))
            # autograd.grad bypasses DDP's hooks: average g by hand, so every rank looks ahead along the union batch's g
            distributed.average_(clean_grad.values())
            along = meta.along_the_step(clean_grad, self.lr_factors)
            chunk_grads = [self._target_gradient(before, along, inputs, recorded, eta / len(inputs))[:rows]
                           for before, inputs, rows, recorded in saved]
        target_grad = meta.combine_chunk_gradients(chunk_grads, meta.k_step_discounts(k_steps, eta))
        return float(torch.stack(losses).mean()), target_grad

    def _recording(self) -> contextlib.AbstractContextManager:
        return tangents.recording(self.tangent_chain) if self.tangent_chain else contextlib.nullcontext(None)

    def _target_gradient(self, before: dict[str, Tensor], clean_grad: dict[str, Tensor], inputs: Tensor,
                         recorded: list[Tensor] | None, scale: float) -> Tensor:
        if recorded:
            return tangents.target_gradient(self.tangent_chain, recorded, before, clean_grad, scale)
        return meta.target_gradient(self._student_forward, before, clean_grad, inputs, scale)

    def _student_forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        buffers = dict(self.student.named_buffers())
        return torch.func.functional_call(self.student, (params, buffers), (x,))

    def _teacher_from_student(self) -> None:
        """After warm-up the teacher starts from the warmed-up network (the enhancer stays fresh)."""
        self.teacher.classifier.load_state_dict(self.student.state_dict())

    def _agreed_stop(self) -> bool:
        """A signal may reach the ranks at different steps; they stop together at the first step any saw it."""
        self.stop_requested = distributed.any_rank(self.stop_requested)
        return self.stop_requested

    def _check_finite(self, name: str, value: Tensor) -> None:
        # a host sync per step; the loss is read for the step report anyway. All ranks stop together.
        if not distributed.all_agree(bool(torch.isfinite(value))):
            raise TrainingError(f"{name} became {float(value.detach())} at epoch {self.epoch + 1}, step {self.step + 1}; the last good "
                                f"state is kept for --resume; lower train.student_lr / train.teacher_lr")

    # ---- evaluation ----------------------------------------------------------------------------
    def _end_epoch(self, epoch: int, phase: str, seconds: float) -> EpochReport:
        self.sync_buffers()
        with self.watch("evaluation"):
            preds = self.predict(self.holdout)
        truth = self.holdout.labels.numpy()
        s_acc = float((preds["student_probs"].argmax(1) == truth).mean()) if len(truth) else float("nan")
        t_acc = float((preds["teacher_probs"].argmax(1) == truth).mean()) if len(truth) else float("nan")
        score = float((self.source_probs(preds).argmax(1) == truth).mean()) if len(truth) else float(epoch)
        best = phase == "meta" and score >= self.best_score
        if best:
            self.best_score, self.best_state = score, self.state()
        report = EpochReport(epoch, phase, s_acc, t_acc, score, best, seconds)
        self.history.append(report)
        return report

    def source_probs(self, preds: dict) -> "object":
        source = self.recipe.correct.source
        if source == "ensemble":
            return 0.5 * (preds["teacher_probs"] + preds["student_probs"])
        return preds[f"{source}_probs"]

    def sync_buffers(self) -> None:
        """BatchNorm running statistics drift per rank (each sees its own rows): take rank 0's."""
        distributed.broadcast_state_(self.student, buffers_only=True)
        distributed.broadcast_state_(self.teacher, buffers_only=True)

    def predict_to_main(self, data: TensorSet) -> dict | None:
        """`predict` with each rank scoring its contiguous share of the rows, gathered on rank 0 only (None on
        the other ranks): the N x C arrays are never copied to every process."""
        mine = self.predict(data.part(distributed.shard(len(data), self.world.size, self.world.rank)))
        gathered = {key: distributed.gather_rows_to_main(torch.from_numpy(np.ascontiguousarray(value)), len(data))
                    for key, value in mine.items()}
        return {key: value.numpy() for key, value in gathered.items()} if self.world.is_main else None

    def predict(self, data: TensorSet, batch_size: int = 512) -> dict:
        """Eval-mode pass: teacher and student probabilities, the enhancer's retain weight for the set's labels."""
        self.student.eval(), self.teacher.eval()
        try:
            return prediction.predict(self.student, self.teacher, self.eval_batches, data, self.num_classes, batch_size)
        finally:
            self.student.train(), self.teacher.train()

    def state(self) -> dict:
        return {"student": copy.deepcopy(self.student.state_dict()), "teacher": copy.deepcopy(self.teacher.state_dict())}

    def training_state(self) -> dict:
        """Everything needed to continue exactly: weights, optimisers, samplers, RNGs, position, best epoch."""
        return {
            "models": self.state(), "student_opt": self.student_opt.state_dict(), "teacher_opt": self.teacher_opt.state_dict(),
            "noisy_sampler": self.noisy_sampler.state_dict(), "clean_sampler": self.clean_sampler.state_dict(),
            "shuffle_generator": self.shuffle_generator.get_state(),
            "generator": distributed.gather_objects(self.generator.get_state()),
            "torch_rng": distributed.gather_objects(torch.get_rng_state()), "world_size": self.world.size,
            "epoch": self.epoch, "step": self.step, "best_score": self.best_score,
            "best_state": self.best_state or {}, "history": [vars(h) for h in self.history],
        }

    def load_training_state(self, state: dict) -> None:
        """`state` as training_state() gives it, checked first (saved_state.check_trainer_state)."""
        self.load_state(state["models"])
        self.student_opt.load_state_dict(state["student_opt"])
        self.teacher_opt.load_state_dict(state["teacher_opt"])
        self.noisy_sampler.load_state_dict(state["noisy_sampler"])
        self.clean_sampler.load_state_dict(state["clean_sampler"])
        self.shuffle_generator.set_state(state["shuffle_generator"])
        self.generator.set_state(state["generator"][self.world.rank])
        torch.set_rng_state(state["torch_rng"][self.world.rank])
        self.epoch, self.step, self.best_score = int(state["epoch"]), int(state["step"]), float(state["best_score"])
        self.best_state = state["best_state"] or None
        self.history = [EpochReport(**h) for h in state["history"]]

    def load_state(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        self.teacher.load_state_dict(state["teacher"])

