"""Where a depth model's error comes from: the same models (and the image-row prior) scored on synthetic rooms,
synthetic streets and the 20 real frames of the depth recipe, with the recipe's protocol (LSQ disparity
alignment). A model that barely beats the prior on its own kind of scene is short of fitting; one that beats it
there but not on the real frames is short of transfer.

    python benchmarks/depth_domain_gap.py --shared ../shared --runs /tmp/probe/base_s0 /tmp/probe/tex_s0 \\
        [--scenes 64] [--imgsz 192 256]

Writes the ``depth-domain-gap`` block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from depth_recipe import RowPrior, evaluate_real, real_frames, write_eval_yaml
from doc_block import write_doc_block

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("VISIONLAB_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--runs", nargs="+", default=[], help="depth run folders (or weights files) to score")
    ap.add_argument("--scenes", type=int, default=64, help="synthetic val scenes of each kind")
    ap.add_argument("--imgsz", type=int, nargs=2, default=[192, 256], metavar=("H", "W"))
    ap.add_argument("--out", default="/tmp/depth_domain_gap", help="folder for best/worst grids and metrics")
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    args = ap.parse_args()
    shared = Path(args.shared)
    if not (shared / "data" / "depth").is_dir():
        print(f"skip: {shared}/data/depth not found (pass --shared or set VISIONLAB_SHARED)")
        return 0
    os.environ.setdefault("VISIONLAB_PROGRESS", "0")
    from visionlab.cfg import build_config
    from visionlab.engine.model_io import load_model
    from visionlab.tasks.base import get_task

    task = get_task("depth")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sets = {}
    for label, rooms in (("synthetic rooms", 1.0), ("synthetic streets", 0.0)):
        settings = {"data": "synthetic", "imgsz": args.imgsz, "synthetic_val": args.scenes, "synthetic_rooms": rooms,
                    "batch": 8, "workers": 0, "split": "val"}
        cfg = build_config(task.config_cls, "depth", settings)
        sets[label] = (cfg, task.build_dataset(cfg, "val", train=False))
    sets["real frames"] = real_frames(task, write_eval_yaml(shared, out / "real_depth.yaml"), args.imgsz, 8)
    models = [("image-row prior", RowPrior.build())]
    models += [(Path(r).name, load_model(Path(r), "cpu", task=task)[0]) for r in args.runs]
    table: dict[str, dict[str, float]] = {}
    for name, model in models:
        for label, (cfg, ds) in sets.items():
            m = evaluate_real(task, model, cfg, ds, out / name.replace(" ", "_") / label.replace(" ", "_"))
            table.setdefault(name, {})[label] = m["absrel"]
        print(name, {k: round(v, 4) for k, v in table[name].items()}, flush=True)
    prior = table["image-row prior"]
    lines = ["### Depth: fit or transfer? The same models on synthetic and real frames", "",
             f"AbsRel at {args.imgsz[0]}x{args.imgsz[1]} after per-image LSQ alignment in disparity "
             f"({args.scenes} synthetic val scenes of each kind, sky not scored; the 20 real frames of the recipe); "
             "in brackets: how much lower than the image-row prior on the same images.", "",
             "| model | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for name, row in table.items():
        cells = [f"{row[k]:.4f}" + ("" if name == "image-row prior" else f" ({1 - row[k] / prior[k]:.0%})")
                 for k in sets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Command: `python benchmarks/depth_domain_gap.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
              + "` (the runs are probe teachers of the table above)."]
    write_doc_block(Path(args.doc), "depth-domain-gap", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
