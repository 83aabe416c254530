"""Comparing a rasterised drawing with a reference picture (Pillow only).

A picture is reduced to its *ink*: pixels where the grey level changes
sharply (outlines, lines, text), so that fills and gradients of other tools do
not count, only what is drawn. The reference drawing's position and scale are
found from the bounding box of its largest connected blob of ink (which leaves
out vendor logos and other decoration far from the diagram); the drawing under
test is then placed over that box and both are compared cell by cell on a
coarse grid, with one cell of tolerance.
"""

from __future__ import annotations

import base64
import io
from collections import deque
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter

#: Grey-level jump (Laplacian response) above which a pixel is ink.
EDGE_THRESHOLD = 70
#: Side of a grid cell, in reference pixels.
CELL = 8


def load_picture(data: bytes | str) -> Image.Image:
    """A PNG (path or bytes) as an opaque grey-level image on white."""
    image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    image.load()
    if image.mode in ("RGBA", "LA", "P"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return image.convert("L")


def ink(image: Image.Image) -> Image.Image:
    """Mode ``L`` mask: 255 where something is drawn, 0 elsewhere."""
    padded = Image.new("L", (image.width + 2, image.height + 2), 255)
    padded.paste(image, (1, 1))
    edges = padded.filter(ImageFilter.FIND_EDGES).crop((1, 1, image.width + 1, image.height + 1))
    return edges.point(lambda v: 255 if v > EDGE_THRESHOLD else 0)


def cells(mask: Image.Image, cell: int = CELL) -> Image.Image:
    """The coarse grid: a cell is ink when at least two of its pixels are."""
    width, height = -(-mask.width // cell), -(-mask.height // cell)
    canvas = Image.new("L", (width * cell, height * cell), 0)
    canvas.paste(mask, (0, 0))
    small = canvas.resize((width, height), Image.BOX)
    limit = 255 * 2 / (cell * cell)
    return small.point(lambda v: 255 if v >= limit else 0)


def _component_boxes(grid: Image.Image, reach: int) -> list[tuple[int, tuple[int, int, int, int]]]:
    """(cell count, cell bbox) of each connected blob of ink cells, cells within ``reach`` joined."""
    joined = grid.filter(ImageFilter.MaxFilter(2 * reach + 1)) if reach else grid
    width, height = grid.size
    joined_px, grid_px = joined.load(), grid.load()
    seen = [[False] * width for _ in range(height)]
    blobs = []
    for y0 in range(height):
        for x0 in range(width):
            if seen[y0][x0] or not joined_px[x0, y0]:
                continue
            queue = deque([(x0, y0)])
            seen[y0][x0] = True
            count, box = 0, [x0, y0, x0, y0]
            while queue:
                x, y = queue.popleft()
                if grid_px[x, y]:
                    count += 1
                    box = [min(box[0], x), min(box[1], y), max(box[2], x), max(box[3], y)]
                for nx, ny in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)):
                    if 0 <= nx < width and 0 <= ny < height and not seen[ny][nx] and joined_px[nx, ny]:
                        seen[ny][nx] = True
                        queue.append((nx, ny))
            if count:
                blobs.append((count, (box[0], box[1], box[2], box[3])))
    return blobs


def drawing_box(mask: Image.Image, cell: int = CELL, reach: int = 3) -> tuple[int, int, int, int]:
    """Pixel bounding box (x0, y0, x1, y1 exclusive) of the largest blob of ink."""
    blobs = _component_boxes(cells(mask, cell), reach)
    if not blobs:
        raise AssertionError("the picture has no ink at all")
    _, (cx0, cy0, cx1, cy1) = max(blobs)
    region = (cx0 * cell, cy0 * cell, min((cx1 + 1) * cell, mask.width), min((cy1 + 1) * cell, mask.height))
    inner = mask.crop(region).getbbox()
    assert inner is not None
    return region[0] + inner[0], region[1] + inner[1], region[0] + inner[2], region[1] + inner[3]


@dataclass(frozen=True)
class Score:
    recall: float  # share of the reference's ink cells that the drawing covers
    precision: float  # share of the drawing's ink cells that the reference covers
    reference_cells: int
    drawing_cells: int

    @property
    def f1(self) -> float:
        if self.recall + self.precision == 0:
            return 0.0
        return 2 * self.recall * self.precision / (self.recall + self.precision)


def _count(grid: Image.Image) -> int:
    return grid.histogram()[255]


def compare(reference: Image.Image, drawing: Image.Image, box: tuple[int, int, int, int], cell: int = CELL, tolerance: int = 1) -> Score:
    """Ink overlap of two same-size pictures inside ``box``, ``tolerance`` cells apart at most."""
    assert reference.size == drawing.size, (reference.size, drawing.size)
    margin = 2 * cell
    region = (max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, reference.width), min(box[3] + margin, reference.height))
    ref_grid = cells(ink(reference).crop(region), cell)
    our_grid = cells(ink(drawing).crop(region), cell)
    ref_near = ref_grid.filter(ImageFilter.MaxFilter(2 * tolerance + 1)) if tolerance else ref_grid
    our_near = our_grid.filter(ImageFilter.MaxFilter(2 * tolerance + 1)) if tolerance else our_grid
    ref_count, our_count = _count(ref_grid), _count(our_grid)
    recall = _count(ImageChops.multiply(ref_grid, our_near)) / ref_count if ref_count else 0.0
    precision = _count(ImageChops.multiply(our_grid, ref_near)) / our_count if our_count else 0.0
    return Score(recall, precision, ref_count, our_count)


def svg_data_url(svg: str) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")
