"""The README's depth picture: real images beside a trained model's predicted depth (colourised disparity,
near = red), each image at its own aspect ratio.

    python benchmarks/depth_picture.py --model runs/depth_recipe/recipe/student \
        --images IMG [IMG ...] [--height 200] [--out docs/images/depth_predictions.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="depth run folder, weights file or official checkpoint")
    ap.add_argument("--images", nargs="+", required=True)
    ap.add_argument("--height", type=int, default=200, help="height of every panel in the picture")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "depth_predictions.png")
    args = ap.parse_args()

    from visionlab.data.io import read_image
    from visionlab.engine.model_io import load_model
    from visionlab.tasks.base import get_task
    from visionlab.tasks.depth import colorize_disparity

    task = get_task("depth")
    model, meta = load_model(args.model, "cpu", task=task)
    rows = []
    for path in args.images:
        image = read_image(path)
        disparity = task.infer(model, [image], tuple(meta["imgsz"]))[0]  # at the image's own size
        panels = [image, colorize_disparity(disparity)]
        w = round(image.shape[1] * args.height / image.shape[0])
        rows.append(np.concatenate([np.asarray(Image.fromarray(p).resize((w, args.height), Image.BILINEAR))
                                    for p in panels], axis=1))
    width = max(r.shape[1] for r in rows)
    canvas = np.full((sum(r.shape[0] + 4 for r in rows) - 4, width, 3), 255, np.uint8)
    y = 0
    for r in rows:
        canvas[y:y + r.shape[0], :r.shape[1]] = r
        y += r.shape[0] + 4
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(args.out, optimize=True)
    print(f"wrote {args.out} ({canvas.shape[1]}x{canvas.shape[0]}) from {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
