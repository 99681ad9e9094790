"""Decoding: torchvision's batched JPEG path gives Pillow's pixels, bad files in a batch are named and the rest
decoded, large JPEGs use DCT scaling within a pixel or two of a full decode, datasets are read in Arrow slices,
and `data.resize: crop` keeps the aspect ratio where "stretch" squashes."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from emlc_cli.cache import decode
from emlc_cli.data.imagefolder import load_image_folder


def pil_pixels(path, size):
    with Image.open(path) as image:
        return torch.from_numpy(np.array(image.convert("RGB").resize((size, size), Image.BILINEAR))).permute(2, 0, 1)


@pytest.fixture
def jpegs(tmp_path):
    """Baseline colour and grey JPEGs of 16 px, a progressive one, a PNG and a corrupt JPEG, in two classes."""
    rng = np.random.default_rng(0)
    root = tmp_path / "jpegs"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
    for i in range(300):  # more than one batch
        pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "ab"[i % 2] / f"{i:03d}.jpg", quality=85)
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / "a" / "grey.jpg")
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "a" / "prog.jpg", progressive=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / "b" / "p.png")
    whole = (root / "a" / "000.jpg").read_bytes()
    (root / "b" / "zcut.jpg").write_bytes(whole[: len(whole) // 2])
    return root


def test_every_path_gives_pillows_pixels_and_a_corrupt_file_is_named(jpegs):
    data = load_image_folder(jpegs)
    images, bad = decode.decode_images(data, 16, workers=2)
    cut = data.paths.index("b/zcut.jpg")
    assert [i for i, _ in bad] == [cut] and "truncated" in bad[0][1].lower()
    for i, rel in enumerate(data.paths):
        if i != cut:
            assert torch.equal(images[i], pil_pixels(jpegs / rel, 16)), rel
    assert decode.jpeg_frame((jpegs / "a" / "000.jpg").read_bytes()) == (16, 16, 8, True)
    assert decode.jpeg_frame((jpegs / "a" / "prog.jpg").read_bytes())[3] is False  # progressive: Pillow's
    assert decode.jpeg_frame((jpegs / "b" / "p.png").read_bytes()) is None


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_close_to_a_full_decode(tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "big" / "a").mkdir(parents=True)
    (tmp_path / "big" / "b").mkdir()
    for i in range(4):
        pixels = np.kron(rng.integers(0, 255, (12, 16, 3)), np.ones((32, 32, 1))).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "big" / "ab"[i % 2] / f"{i}.jpg", quality=90)
    data = load_image_folder(tmp_path / "big")
    images, bad = decode.decode_images(data, 32)
    full = torch.stack([pil_pixels(tmp_path / "big" / rel, 32) for rel in data.paths])
    difference = (images.float() - full.float()).abs()
    assert bad == [] and 0 < difference.mean() < 3.0


def test_a_dataset_is_read_in_arrow_slices_with_the_same_pixels(tmp_path, jpegs):
    import datasets

    from emlc_cli.data.huggingface import read_dataset
    from emlc_cli.data.spec import SourceSpec

    files = sorted(p for p in jpegs.glob("*/*.jpg") if p.name != "zcut.jpg")
    cells = [{"bytes": p.read_bytes(), "path": None} for p in files]
    table = datasets.Dataset.from_dict({"image": cells, "label": [p.parent.name for p in files]},
                                       features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("string")}))
    table.shuffle(seed=0).save_to_disk(str(tmp_path / "saved"))  # rows no longer in file order
    data = read_dataset(SourceSpec(str(tmp_path / "saved")), "hf_disk")
    blobs = data.blobs(range(5, 40))
    assert all(isinstance(b, bytes) for b in blobs)
    for i, blob in zip(range(5, 40), blobs):
        with data.open(i) as opened, Image.open(io.BytesIO(blob)) as sliced:
            assert np.array_equal(np.asarray(opened.convert("RGB")), np.asarray(sliced.convert("RGB")))
    images, bad = decode.decode_images(data, 16)
    assert bad == [] and images.shape == (len(files), 3, 16, 16)
    with data.open(7) as opened:
        assert torch.equal(images[7], torch.from_numpy(np.array(opened.convert("RGB"))).permute(2, 0, 1))


def _wide_image(folder, size_x=96, size_y=32):
    """Three vertical bands, red | green | blue, each size_y wide: a centred square crop is all green."""
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    pixels = np.zeros((size_y, size_x, 3), dtype=np.uint8)
    third = size_x // 3
    pixels[:, :third, 0] = pixels[:, third: 2 * third, 1] = pixels[:, 2 * third:, 2] = 255
    Image.fromarray(pixels).save(folder / "a" / "wide.png")
    Image.fromarray(pixels.transpose(1, 0, 2).copy()).save(folder / "b" / "tall.png")
    return load_image_folder(folder)


def test_crop_keeps_the_aspect_ratio_where_stretch_squashes(tmp_path):
    data = _wide_image(tmp_path / "bands")
    cropped, bad = decode.decode_images(data, 16, resize="crop")
    stretched, _ = decode.decode_images(data, 16)
    assert bad == []
    for image in cropped:  # the centre third, green, fills the whole square for the wide and the tall image
        assert image[1].float().mean() > 250 and image[0].float().mean() < 5 and image[2].float().mean() < 5
    for image in stretched:  # all three bands, squashed
        assert all(image[c].float().mean() > 60 for c in range(3))
    with pytest.raises(ValueError, match="resize must be one of"):
        decode.decode_images(data, 16, resize="fit")


def test_the_resize_is_part_of_the_store_key_and_stretch_keeps_old_keys(tmp_path):
    from emlc_cli.cache import store

    data = _wide_image(tmp_path / "bands")
    assert store.key_for(data, 16) == store.key_for(data, 16, "stretch") != store.key_for(data, 16, "crop")
