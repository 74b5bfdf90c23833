"""Render docs/images/synthetic_grid.png: synthetic scenes as image | category mask | depth triplets
(``--rooms``: the indoor scenes of ``synthetic_rooms`` into docs/images/synthetic_rooms_grid.png).

    python benchmarks/make_synthetic_grid.py [--n 12] [--size 176 352] [--seed 0] [--out PATH]
    python benchmarks/make_synthetic_grid.py --rooms --n 8 --size 144 192 --cols 2
    python benchmarks/make_synthetic_grid.py --rooms --n 4 --size 144 192 --cols 2 \
        --textures ../shared/data/camvid/train ../shared/data/photos --out docs/images/synthetic_rooms_textured.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

from visionlab.data.categories import colorize
from visionlab.data.synthetic import SKY_DEPTH, render_scene
from visionlab.data.synthetic_rooms import render_room
from visionlab.data.textures import TextureBank


def depth_to_rgb(depth: np.ndarray, per_image: bool = False) -> np.ndarray:
    """Inverse depth through a colormap (near = bright); sky drawn black. Streets: 2 m and nearer saturate;
    ``per_image`` (rooms, all within a few metres): the image's own nearest..farthest range."""
    inv = np.clip(2.0 / depth, 0, 1) if not per_image else (1 / depth - 1 / depth.max()) / (1 / depth.min() - 1 / depth.max() + 1e-9)
    rgb = colormaps["magma"](inv ** 0.5)[..., :3]
    rgb[depth >= SKY_DEPTH] = 0
    return (rgb * 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=12)
    p.add_argument("--size", type=int, nargs=2, default=(176, 352), metavar=("H", "W"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cols", type=int, default=2, help="triplets per grid row")
    p.add_argument("--rooms", action="store_true", help="indoor scenes instead of streets")
    p.add_argument("--textures", nargs="*", default=[], help="rooms: paint surfaces with these photos "
                   "(synthetic_textures)")
    p.add_argument("--out", type=Path, default=None, help="default docs/images/synthetic[_rooms]_grid.png")
    a = p.parse_args()
    a.out = a.out or ROOT / f"docs/images/synthetic{'_rooms' * a.rooms}_grid.png"
    bank = TextureBank(a.textures) if a.textures else None
    render = (lambda seed, h, w: render_room(seed, h, w, textures=bank)) if a.rooms else render_scene
    h, w = a.size
    gap = 4
    rows = -(-a.n // a.cols)
    cell_w = 3 * w + 2 * gap
    canvas = np.full((rows * (h + gap) - gap, a.cols * (cell_w + 3 * gap) - 3 * gap, 3), 255, np.uint8)
    for i in range(a.n):
        s = render(a.seed + i, h, w)
        y, x = (i // a.cols) * (h + gap), (i % a.cols) * (cell_w + 3 * gap)
        for j, panel in enumerate((s.image, colorize(s.mask), depth_to_rgb(s.depth, a.rooms))):
            canvas[y : y + h, x + j * (w + gap) : x + j * (w + gap) + w] = panel
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(a.out, optimize=True)
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB, {canvas.shape[1]}x{canvas.shape[0]})")


if __name__ == "__main__":
    main()
