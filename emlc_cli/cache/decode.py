"""Decoding: every item of a source read once into uint8 pixels (or its feature vector), as the cache stores it."""
from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from emlc_cli.data.labeled import LabeledImages


BATCH = 256  # rows read per slice of the source (one Arrow slice for a dataset)
UNREADABLE = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError, EOFError,
              MemoryError, IndexError, TypeError)  # PIL's many ways to fail on one bad file


RESIZES = ("stretch", "crop")


def decode_images(data: LabeledImages, size: int, workers: int = 0, rows: range | None = None,
                  out: torch.Tensor | None = None, resize: str = "stretch", crop_pct: float = 1.0,
                  interpolation: str = "bilinear") -> tuple[torch.Tensor, list[tuple[int, str]]]:
    """Decode every item of `rows` (default: all) once: uint8 [n, 3, size, size] for images (into `out` when
    given), float32 [n, D] for feature vectors. Unreadable images come back listed as (dataset index, reason).
    `resize`: "stretch" squashes the whole image to size x size; "crop" keeps the aspect ratio and takes the
    centred square of the shorter side (what ImageNet backbones saw in training). `crop_pct` < 1 keeps only the
    centred fraction of that square (or of the whole image, "stretch"): a pretrained model's resize to
    size / crop_pct then centre crop, in one resampling with `interpolation` (preprocessing.py).

    Baseline 8-bit JPEGs of exactly size x size px are decoded in batches by torchvision's libjpeg-turbo call
    (the same pixels as Pillow's, without Pillow's per-file header parsing in Python); everything else goes
    through Pillow on `workers` threads, with JPEG's DCT scaling (`draft`) when the image is at least twice the
    size asked for."""
    rows = range(len(data)) if rows is None else rows
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {', '.join(RESIZES)}, not {resize!r}")
    # Over Image.MAX_IMAGE_PIXELS PIL warns once per image (thousands of lines on a large folder); over twice that
    # it raises DecompressionBombError, recorded below as unreadable. Set per call: callers may reset the filters.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if data.features is not None:
        return torch.as_tensor(np.asarray(data.features[rows.start: rows.stop], dtype=np.float32)), []
    out = torch.zeros((len(rows), 3, size, size), dtype=torch.uint8) if out is None else out
    bad: list[tuple[int, str]] = []

    def work(item: tuple[int, bytes | None]) -> None:
        i, blob = item
        try:
            opened = Image.open(io.BytesIO(blob)) if blob is not None else data.open(i)
            out[i - rows.start] = torch.from_numpy(_read_rgb(opened, size, resize, crop_pct, interpolation)).permute(2, 0, 1)
        except UNREADABLE as err:
            bad.append((i, f"{type(err).__name__}: {err}".splitlines()[0][:200]))

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 1) * 2)) as pool:
        for start in range(rows.start, rows.stop, BATCH):
            chunk = range(start, min(start + BATCH, rows.stop))
            items = list(zip(chunk, data.blobs(chunk)))
            rest = _decode_exact_jpegs(items, size, out, rows.start) if crop_pct == 1.0 else items
            list(pool.map(work, rest))
    return out, sorted(bad)


def _decode_exact_jpegs(batch: list[tuple[int, bytes | None]], size: int, out: torch.Tensor,
                        offset: int) -> list[tuple[int, bytes | None]]:
    """Decode the baseline 8-bit grey or YCbCr JPEGs of exactly size x size px among `batch` into `out` (row i at
    i - offset) in one torchvision call; return the items left for Pillow (other formats, sizes, corrupt files)."""
    exact = [(i, b) for i, b in batch if b is not None and jpeg_frame(b) == (size, size, 8, True)]
    if not exact:
        return batch
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:  # torchvision 0.29 deprecates its image decoders for TorchCodec: Pillow decodes them all
        return batch
    encoded = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for _, b in exact]
    try:
        with warnings.catch_warnings():  # called from the decoding thread only
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = decode_jpeg(encoded, mode=ImageReadMode.RGB)
    except RuntimeError:  # one corrupt file fails the call: Pillow decodes the batch and names the bad one
        return batch
    out[torch.tensor([i - offset for i, _ in exact])] = torch.stack(decoded)
    done = {i for i, _ in exact}
    return [item for item in batch if item[0] not in done]


def jpeg_frame(blob: bytes) -> tuple[int, int, int, bool] | None:
    """(width, height, bits per sample, baseline with 1 or 3 components) from a JPEG's start-of-frame segment,
    or None if `blob` is no JPEG. Walks the segments after SOI (FF D8) up to the first frame marker."""
    if blob[:3] != b"\xff\xd8\xff":
        return None
    pos = 2
    while pos + 10 <= len(blob) and blob[pos] == 0xFF:
        marker = blob[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..SOF15, not DHT / JPG / DAC
            width, height = int.from_bytes(blob[pos + 7: pos + 9], "big"), int.from_bytes(blob[pos + 5: pos + 7], "big")
            return width, height, blob[pos + 4], marker == 0xC0 and blob[pos + 9] in (1, 3)
        pos += 2 + int.from_bytes(blob[pos + 2: pos + 4], "big")
    return None


def _read_rgb(opened: Image.Image, size: int, resize: str = "stretch", crop_pct: float = 1.0,
              interpolation: str = "bilinear") -> np.ndarray:
    whole = int(np.ceil(size / min(crop_pct, 1.0)))  # the side the crop is taken from
    with opened as img:
        if img.format == "JPEG" and min(img.size) >= 2 * whole:
            img.draft(None, (whole, whole))  # decode at 1/2, 1/4 or 1/8 scale, still >= size: the resize below finishes
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            scale = 1.0 / 256.0 if img.mode.startswith("I;16") or np.asarray(img).max() > 255 else 1.0
            img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) * scale, 0, 255).astype(np.uint8))
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            background = Image.new("RGB", img.size, (255, 255, 255))
            background.paste(img.convert("RGBA"), mask=img.convert("RGBA").split()[-1])
            img = background
        img = img.convert("RGB")
        if img.size != (size, size) or crop_pct != 1.0:
            img = img.resize((size, size), RESAMPLE[interpolation], box=_source_box(img.size, resize, crop_pct))
        return np.array(img, dtype=np.uint8)


RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS,
            "box": Image.BOX, "hamming": Image.HAMMING}


def _source_box(width_height: tuple[int, int], resize: str, crop_pct: float = 1.0) -> tuple[float, float, float, float]:
    """The part of the image that becomes the output square: all of it, or its centred square ("crop"), each
    narrowed to its centred `crop_pct`."""
    width, height = width_height
    if resize == "crop":
        width = height = min(width, height)
    box_w, box_h = width * min(crop_pct, 1.0), height * min(crop_pct, 1.0)
    left, top = (width_height[0] - box_w) / 2, (width_height[1] - box_h) / 2
    return (left, top, left + box_w, top + box_h)
