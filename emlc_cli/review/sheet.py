"""The PNG contact sheet of `emlc review --png`: the most confident changes, one labelled tile each."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont, ImageOps

from emlc_cli.review.run_view import Item, RunView
from emlc_cli.review.thumbnails import Thumbnails

IMAGE_PX = 128            # the image area of a tile
PAD = 8
TEXT_H = 36               # two lines of labels under the image
HEADER_H = 30
MAX_COLUMNS = 6
BACKGROUND = (246, 247, 249)
TILE = (255, 255, 255)
BORDER = (200, 205, 214)
PLACEHOLDER = (200, 200, 200)
INK, GIVEN, FIXED = (29, 35, 48), (180, 35, 24), (6, 118, 71)


@dataclass(frozen=True)
class SheetGeometry:
    tiles: int
    columns: int
    rows: int

    @property
    def tile_size(self) -> tuple[int, int]:
        return IMAGE_PX + 2 * PAD, IMAGE_PX + TEXT_H + 2 * PAD

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.tile_size
        return self.columns * w, HEADER_H + self.rows * h

    def tile_box(self, k: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of tile k, row-major."""
        w, h = self.tile_size
        left, top = (k % self.columns) * w, HEADER_H + (k // self.columns) * h
        return left, top, left + w, top + h


def sheet_geometry(tiles: int) -> SheetGeometry:
    columns = max(1, min(MAX_COLUMNS, tiles))
    return SheetGeometry(tiles, columns, max(1, -(-tiles // columns)))


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def render_sheet(view: RunView, thumbs: Thumbnails) -> Image.Image:
    """A grid of view.changed (already sorted and capped), with a one-line header."""
    geometry = sheet_geometry(len(view.changed))
    sheet = Image.new("RGB", geometry.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    header = f"emlc review: {view.name} - {len(view.changed)} of {view.totals['changed']} changed labels, most confident first"
    draw.text((PAD, 8), _fit(draw, header, geometry.size[0] - 2 * PAD, _font(13)), fill=INK, font=_font(13))
    for k, item in enumerate(view.changed):
        _tile(sheet, draw, geometry.tile_box(k), item, thumbs)
    return sheet


def _tile(sheet: Image.Image, draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], item: Item, thumbs: Thumbnails) -> None:
    left, top, right, bottom = box
    draw.rectangle((left + 2, top + 2, right - 3, bottom - 3), fill=TILE, outline=BORDER)
    image = thumbs.image(item.path, size=IMAGE_PX)
    if image is None:
        image = Image.new("RGB", (IMAGE_PX, IMAGE_PX), PLACEHOLDER)
    method = Image.NEAREST if max(image.size) < IMAGE_PX // 2 else Image.BICUBIC
    image = ImageOps.contain(image, (IMAGE_PX, IMAGE_PX), method=method)
    x = left + PAD + (IMAGE_PX - image.width) // 2
    y = top + PAD + (IMAGE_PX - image.height) // 2
    sheet.paste(image, (x, y))
    font, width, text_top = _font(12), IMAGE_PX, top + PAD + IMAGE_PX + 3
    draw.text((left + PAD, text_top), _fit(draw, f"given: {item.given}", width, font), fill=GIVEN, font=font)
    draw.text((left + PAD, text_top + 16), _fit(draw, f"now: {item.corrected} ({item.confidence:.2f})", width, font),
              fill=FIXED, font=font)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> str:
    """`text`, shortened with '...' until it fits `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."
