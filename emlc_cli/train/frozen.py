"""Frozen-backbone mode (`model.freeze_backbone: true`): embed every image once with the pretrained backbone,
keep the features, and run warm-up, meta steps and corrections on heads over the cached features.

The backbone's weights never change, so its forward pass is the same in every epoch: paying it once instead
of (3 + K) times per meta step is what makes a pretrained feature space usable on a CPU. Images are decoded a
batch at a time with the backbone's own preprocessing, embedded, and their pixels dropped (no full-size pixel
cache: 1M images at 224 px are 150 GB of pixels, 0.8 GB of 384-d float16 features); the features are kept in
the embedding store (cache/embeddings.py), so a second round, a rerun, --resume or another rank embeds nothing."""
from __future__ import annotations

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

from emlc_cli.runtime import distributed
from emlc_cli.cache import embeddings as embed_store
from emlc_cli.models import pretrained
from emlc_cli.models.backbones import FEATURE_HEAD
from emlc_cli.cache.decode import decode_images
from emlc_cli.data.labeled import LabeledImages
from emlc_cli.models.build import build_backbone
from emlc_cli.preprocessing import Preprocessing
from emlc_cli.recipe.schema import Recipe
from emlc_cli.train.events import EmbedReport

log = logging.getLogger(__name__)


@dataclass
class Encoder:
    """A frozen backbone with its preprocessing; `identity` keys the embedding store (what the features depend
    on), `record` goes into the run's model JSON (what evaluate needs to rebuild it without a download)."""

    module: nn.Module
    preprocessing: Preprocessing
    identity: dict[str, Any]
    record: dict[str, Any]
    flip: bool = False
    parts: list["Encoder"] = field(default_factory=list)  # model.backbone=A+B: one Encoder per backbone


@dataclass
class Embedded:
    """The features of every row (float32 [N, D]), the unreadable rows, and what the pass cost."""

    features: Tensor
    unreadable: list[tuple[int, str]]
    stats: dict[str, Any] = field(default_factory=dict)


def frozen_encoder(recipe: Recipe, device: torch.device) -> Encoder:
    """The recipe's backbone, frozen in eval mode on `device`: a timm model with its own preprocessing, or one of
    emlc's / torchvision's with the recipe's image size and ImageNet statistics. Several backbones (A+B) come
    back as one Encoder whose parts are embedded one after the other and concatenated (embed_views)."""
    parts = [_view_encoder(dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, backbone=name)), device)
             for name in pretrained.views(recipe.model.backbone)]
    if len(parts) == 1:
        return parts[0]
    record = {"architecture": recipe.model.backbone, "small_stem": False, "weights": recipe.model.weights,
              "embed_flip": recipe.model.embed_flip,
              "parts": [{**part.record, "preprocessing": part.preprocessing.to_dict()} for part in parts]}
    return Encoder(nn.ModuleList([part.module for part in parts]), parts[0].preprocessing, {}, record,
                   recipe.model.embed_flip, parts)


def _view_encoder(recipe: Recipe, device: torch.device) -> Encoder:
    m = recipe.model
    if pretrained.is_timm_model(m.backbone):
        encoder = _timm_encoder(recipe)
    else:
        net, _ = build_backbone(m.backbone, m.width, m.small_stem, m.weights)
        preprocessing = Preprocessing(recipe.data.image_size, recipe.data.resize)
        weights = pretrained.file_digest(Path(m.weights)) if Path(m.weights).is_file() else m.weights
        record = {"architecture": m.backbone, "small_stem": m.small_stem, "weights": m.weights}
        encoder = Encoder(net, preprocessing, {**record, "width": m.width, "digest": weights}, record)
    encoder.flip = m.embed_flip
    encoder.record["embed_flip"] = m.embed_flip
    encoder.module.eval().requires_grad_(False)
    on_cuda = device.type == "cuda"
    encoder.module.to(device, memory_format=torch.channels_last if on_cuda else torch.preserve_format)
    return encoder


def _timm_encoder(recipe: Recipe) -> Encoder:
    from emlc_cli.preprocessing import from_timm

    m = recipe.model
    located = pretrained.locate(m.backbone, m.weights)
    net, data_config = pretrained.build(located, m.input_size)
    preprocessing = from_timm(data_config, m.input_size)
    kwargs = pretrained.model_kwargs(located, m.input_size)
    record = {"architecture": m.backbone, "small_stem": False, "weights": m.weights, "digest": located.digest,
              "timm": {"architecture": located.architecture, "kwargs": kwargs}}
    identity = _timm_identity(m.backbone, located.digest, located.architecture, kwargs, m.weights)
    return Encoder(net, preprocessing, identity, record)


def _timm_identity(backbone: str, digest: str, architecture: str, kwargs: dict[str, Any], weights: str) -> dict[str, Any]:
    # the weights' digest names them wherever they sit: a model folder moved or copied reuses its embeddings
    named_by = {"digest": digest} if digest else {"backbone": backbone}
    return {**named_by, "architecture": architecture, "kwargs": kwargs, "weights": weights}


def recorded_encoder(net: nn.Module, record: dict[str, Any], preprocessing: Preprocessing) -> Encoder:
    """A saved run's frozen backbone as an Encoder. A timm backbone whose record names its weights' digest gets
    the identity it was embedded under, so evaluate and predict read (and keep) the store's embeddings; any
    other embeds without the store."""
    timm_record, digest = record.get("timm"), record.get("digest")
    identity = (_timm_identity(record["architecture"], digest, timm_record["architecture"], timm_record["kwargs"],
                               record.get("weights", "pretrained")) if timm_record and digest else {})
    return Encoder(net, preprocessing, identity, record, bool(record.get("embed_flip", False)))


def rebuild_backbone(frozen: dict[str, Any], width: int) -> nn.Module:
    """A run's frozen backbone network (its weights are loaded from the run folder by the caller); several
    backbones as a ModuleList."""
    if frozen.get("parts"):
        return nn.ModuleList([rebuild_backbone(part, width) for part in frozen["parts"]])
    timm_record = frozen.get("timm")
    if timm_record:
        return pretrained.rebuild(timm_record["architecture"], timm_record["kwargs"])
    return build_backbone(frozen["architecture"], width, frozen["small_stem"])[0]


def embed_views(ds: LabeledImages, encoder: Encoder, device: torch.device, workers: int = 0,
                emit: Callable[[Any], None] = lambda event: None) -> Embedded:
    """embed_source for one backbone; for several, each one's (each kept in the store), concatenated."""
    if not encoder.parts:
        return embed_source(ds, encoder, device, workers, emit)
    done = [embed_source(ds, part, device, workers, emit) for part in encoder.parts]
    stats = {key: sum(d.stats.get(key, 0) for d in done) for key in ("embedded", "reused", "seconds", "dim")}
    unreadable = sorted(set(item for d in done for item in d.unreadable))
    return Embedded(torch.cat([d.features for d in done], dim=1), unreadable, {**stats, "views": [d.stats for d in done]})


def embed_source(ds: LabeledImages, encoder: Encoder, device: torch.device, workers: int = 0,
                 emit: Callable[[Any], None] = lambda event: None) -> Embedded:
    """Every row of `ds` embedded, read from the embedding store when it holds them (nothing is embedded then).
    Under torchrun each rank embeds its share and every rank gets all rows; rank 0 writes the entry."""
    identity = {**encoder.identity, "preprocessing": encoder.preprocessing.to_dict(), "flip": encoder.flip}
    known = bool(encoder.identity) and distributed.world().is_main  # no identity, no key: nothing to match it by
    key = distributed.broadcast_object(embed_store.key_for(ds, identity) if known else None)
    entry = distributed.broadcast_object(embed_store.lookup(key, len(ds)) if key and distributed.world().is_main else None)
    if entry is not None:
        features = torch.from_numpy(np.load(entry.array).astype(np.float32))
        emit(EmbedReport(len(ds), len(ds), 0.0, reused=True))
        log.info("read %d embeddings from %s (embedded 0 images)", len(ds), entry.path)
        return Embedded(features, entry.unreadable, {"embedded": 0, "reused": len(ds), "seconds": 0.0,
                                                     "dim": int(features.shape[1]), "store": str(entry.path)})
    embedded = _embed_all(ds, encoder, device, workers, emit)
    embedded.features = as_kept(embedded.features)
    if key and distributed.world().is_main:
        info = {"source": ds.origin.get("location") or str(ds.root), "rows": len(ds), "dim": embedded.features.shape[1],
                "encoder": identity, "backbone": encoder.record.get("architecture")}  # the name it was first embedded under
        saved = embed_store.save(key, embedded.features.numpy(), embedded.unreadable, info)
        embedded.stats["store"] = str(saved.path) if saved else None
    return embedded


def as_kept(features: Tensor) -> Tensor:
    """`features` at the precision the store keeps them (float16 where every value fits), so that the run that
    embeds and a rerun that reads them back decide on the same numbers."""
    half = features.half()
    return half.float() if torch.isfinite(half).all() else features


def _embed_all(ds: LabeledImages, encoder: Encoder, device: torch.device, workers: int, emit: Callable[[Any], None]) -> Embedded:
    world, started = distributed.world(), time.perf_counter()
    forward = _forward(encoder, device)
    size = encoder.preprocessing.size
    features = torch.zeros(len(ds), forward(torch.zeros(1, 3, size, size, dtype=torch.uint8)).shape[1])
    mine = distributed.shard(len(ds), world.size, world.rank)
    batch = 256 if device.type == "cuda" else 64
    bad = _embed_rows(ds, encoder, forward, mine, features, workers, batch, _progress(len(mine), emit))
    distributed.share_shards_(features)
    unreadable = sorted(item for part in distributed.gather_objects(bad) for item in part)
    seconds = time.perf_counter() - started
    rate = len(ds) / max(seconds, 1e-9)  # every process's share together
    log.info("embedded %d images in %.1fs (%.1f images/s, %d-d features)", len(ds), seconds, rate, features.shape[1])
    stats = {"embedded": len(ds), "reused": 0, "seconds": round(seconds, 2), "images_per_s": round(rate, 1),
             "dim": int(features.shape[1]), "processes": world.size}
    return Embedded(features, unreadable, stats)


def _embed_rows(ds: LabeledImages, encoder: Encoder, forward: Callable[[Tensor], Tensor], rows: range, out: Tensor,
                workers: int, batch: int, report: Callable[[int], None]) -> list[tuple[int, str]]:
    """Decode a batch, embed it, drop its pixels; the next batch is decoded while this one is embedded."""
    pre = encoder.preprocessing
    chunks = [range(s, min(s + batch, rows.stop)) for s in range(rows.start, rows.stop, batch)]
    decode = lambda chunk: decode_images(ds, pre.size, workers, chunk, resize=pre.resize, crop_pct=pre.crop_pct,  # noqa: E731
                                         interpolation=pre.interpolation)
    bad: list[tuple[int, str]] = []
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(decode, chunks[0]) if chunks else None
        for number, chunk in enumerate(chunks):
            pixels, failed = pending.result()
            if number + 1 < len(chunks):
                pending = ahead.submit(decode, chunks[number + 1])
            out[chunk.start: chunk.stop] = forward(pixels)
            out[[i for i, _ in failed]] = 0.0
            bad += failed
            report(len(chunk))
    return bad


def _forward(encoder: Encoder, device: torch.device) -> Callable[[Tensor], Tensor]:
    """uint8 pixels -> float32 features on the CPU: normalised with the backbone's mean/std, bf16 and
    channels_last on CUDA, averaged with the mirrored image's with model.embed_flip."""
    pre, net, on_cuda = encoder.preprocessing, encoder.module, device.type == "cuda"
    mean = torch.tensor(pre.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(pre.std, device=device).view(1, 3, 1, 1) * 255

    @torch.no_grad()
    def forward(pixels: Tensor) -> Tensor:
        x = (pixels.to(device, non_blocking=True).float() - mean) / std
        x = x.contiguous(memory_format=torch.channels_last) if on_cuda else x
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            features = net(x).float().flatten(1)
            if encoder.flip:
                features = (features + net(x.flip(-1)).float().flatten(1)) / 2
        return features.cpu()

    return forward


def _progress(total: int, emit: Callable[[Any], None]) -> Callable[[int], None]:
    started, done = time.perf_counter(), [0]

    def report(count: int) -> None:
        done[0] += count
        emit(EmbedReport(done[0], total, done[0] / max(time.perf_counter() - started, 1e-9)))

    return report


class FrozenFeatures(nn.Module):
    """A saved frozen-backbone run as one image classifier: head(backbone(x)), flip-averaged as it was embedded
    (for export); `embed(ds)` embeds a source through the store, as training did (evaluate, predict)."""

    def __init__(self, encoder: Encoder, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head, self.flip, self.encoder = encoder.module, head, encoder.flip, encoder

    def embed(self, ds: LabeledImages, device: torch.device) -> Embedded:
        return embed_source(ds, self.encoder, device)

    def forward(self, x: Tensor) -> Tensor:
        features = self.backbone(x).flatten(1)
        if self.flip:
            features = (features + self.backbone(x.flip(-1)).flatten(1)) / 2
        return self.head(features)


class Views(nn.Module):
    """A saved run over several backbones: each part embeds images prepared its own way (its record's
    preprocessing), the embeddings are concatenated and the head scores them. Not a forward over one image
    tensor: `embed(ds)` decodes and embeds a source, then `head` gives the logits."""

    def __init__(self, backbones: nn.ModuleList, parts: list[dict[str, Any]], head: nn.Module) -> None:
        super().__init__()
        self.backbones, self.head = backbones, head
        self.encoders = [recorded_encoder(net, part, _recorded(part["preprocessing"])) for net, part in zip(backbones, parts)]

    def embed(self, ds: LabeledImages, device: torch.device) -> Embedded:
        done = [embed_source(ds, encoder, device) for encoder in self.encoders]
        unreadable = sorted(set(item for d in done for item in d.unreadable))
        return Embedded(torch.cat([d.features for d in done], dim=1), unreadable)


def _recorded(preprocessing: dict[str, Any]) -> Preprocessing:
    """A part's preprocessing as its record holds it (checked where the model JSON is read)."""
    return Preprocessing(**{**preprocessing, "mean": tuple(preprocessing["mean"]), "std": tuple(preprocessing["std"])})


def head_recipe(recipe: Recipe) -> Recipe:
    """The recipe the trainer runs on cached features: an MLP head of model.width (no image augmentation)."""
    model = dataclasses.replace(recipe.model, backbone=FEATURE_HEAD, weights="none")
    data = dataclasses.replace(recipe.data, augment="none")
    train = dataclasses.replace(recipe.train, backbone_lr_factor=1.0)  # the heads have no backbone of their own
    return dataclasses.replace(recipe, model=model, data=data, train=train)
