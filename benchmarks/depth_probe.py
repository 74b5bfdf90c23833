"""Quick probes of the synthetic-to-real gap: short depth teachers (default EfficientNet-Lite0, 800 synthetic
scenes, 6 epochs: ~5 min each on 2 cores), each scored on every real depth frame of shared/data/depth with the
protocol of benchmarks/depth_recipe.py. Each variant is the probe's settings with a few changed, over one or
more seeds, so a change can be told from run-to-run noise before it is tried in the hour-long recipe.

    python benchmarks/depth_probe.py --shared ../shared --project /tmp/probe --seeds 0 1 \\
        --variant base="" --variant rooms09="synthetic_rooms=0.9" --variant elr1="encoder_lr=1.0" \\
        [--eval-imgsz 192 256 288 384] [--adabn]
    python benchmarks/depth_probe.py --seeds 0 1 2 3 \
        --variant tex="synthetic_textures=[../shared/data/camvid/train,../shared/data/camvid/val,../shared/data/photos]"
    python benchmarks/depth_probe.py --project /tmp/probe --report-only   # the table again from probe.json
    python benchmarks/depth_probe.py --project /tmp/probe --seeds 0 1 2 3 --variant base= --ensemble

``--eval-imgsz`` scores every model at each size; ``--adabn`` adds a row per model whose BatchNorm statistics
were re-estimated on the real unlabeled images of the recipe (CamVid train + val, photos; AdaBN, Li et al. 2016).
``--ensemble`` trains nothing: it scores the already trained seeds of each variant as one model, the mean of
their disparities after each is normalised per image (minus its median, over its mean absolute deviation, as
the loss compares maps): what is left when the seed-to-seed noise is averaged away.
Rows accumulate in ``PROJECT/probe.json`` (a variant re-run replaces its rows); the table goes into the
``depth-probe`` block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from depth_recipe import RowPrior, evaluate_real, real_frames, write_eval_yaml
from doc_block import write_doc_block

REPO = Path(__file__).resolve().parents[1]
PROBE = {"data": "synthetic", "model": "depth_efficientnet_lite0", "pretrained": "imagenet", "imgsz": [192, 256],
         "synthetic_train": 800, "synthetic_val": 64, "synthetic_rooms": 0.5, "epochs": 6, "lr": 0.001, "batch": 8,
         "workers": 2, "mlflow": False}
UNLABELED = ("camvid/train", "camvid/val", "photos")


def adabn(model: Any, images: list[Path], imgsz: list[int], batch: int = 8) -> Any:
    """A copy of ``model`` whose BatchNorm running statistics are re-estimated on ``images`` (resized to ``imgsz``,
    as the evaluation sees them): the average of each batch's mean and variance; weights untouched."""
    import torch

    from visionlab.data.io import read_image
    from visionlab.data.transforms import resize_image

    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = [torch.from_numpy(resize_image(read_image(p), tuple(imgsz))) for p in images[i:i + batch]]
            model(torch.stack(x).permute(0, 3, 1, 2).float())
    return model.eval()


def ensemble(models: list[Any]) -> Any:
    """One model whose disparity is the mean of ``models``' disparities, each normalised per image (minus its
    median, over its mean absolute deviation: the SSI loss's alignment, so no model's arbitrary scale dominates)."""
    import torch
    from torch import nn

    class Mean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.models = nn.ModuleList(models)
            self.input_multiple = max(getattr(m, "input_multiple", 1) or 1 for m in models)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            maps = []
            for m in self.models:
                d = m(x).flatten(1)
                centred = d - d.median(1, keepdim=True).values
                maps.append(centred / centred.abs().mean(1, keepdim=True).clamp(min=1e-6))
            return torch.stack(maps).mean(0).view(x.shape[0], 1, *x.shape[-2:])

    return Mean().eval()


def score(task: Any, model: Any, frames: dict, out: Path) -> dict[str, Any]:
    cfg, dataset = frames
    m = evaluate_real(task, model, cfg, dataset, out)
    return {"absrel": m["absrel"], "delta1": m["delta1"],
            "sources": {k.split("/")[0]: v for k, v in m.items() if k.endswith("/absrel")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("VISIONLAB_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--project", default=str(REPO / "runs" / "depth_probe"))
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--variant", action="append", default=[], help='NAME="k=v ...": the probe with these settings')
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--eval-imgsz", type=int, nargs="+", default=[192, 256], help="H W [H W ...]")
    ap.add_argument("--adabn", action="store_true", help="also score each model after AdaBN on the unlabeled images")
    ap.add_argument("--ensemble", action="store_true",
                    help="no training: score the trained seeds of each variant as one model (mean of normalised maps)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the doc block from PROJECT/probe.json")
    args = ap.parse_args()
    if args.report_only:
        lines = report(json.loads((Path(args.project) / "probe.json").read_text()))
        write_doc_block(Path(args.doc), "depth-probe", lines)
        print("\n".join(lines))
        return 0
    shared = Path(args.shared)
    if not (shared / "data" / "depth").is_dir():
        print(f"skip: {shared}/data/depth not found (pass --shared or set VISIONLAB_SHARED)")
        return 0
    if len(args.eval_imgsz) % 2:
        raise SystemExit("error: --eval-imgsz takes pairs H W")
    os.environ.setdefault("VISIONLAB_PROGRESS", "0")
    import visionlab
    from visionlab.cfg import parse_overrides
    from visionlab.data.depth import list_unlabeled
    from visionlab.engine.model_io import load_model
    from visionlab.tasks.base import get_task

    task = get_task("depth")
    call = "python benchmarks/depth_probe.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    project = Path(args.project)
    project.mkdir(parents=True, exist_ok=True)
    store = project / "probe.json"
    rows: list[dict[str, Any]] = json.loads(store.read_text()) if store.is_file() else []
    data_yaml = write_eval_yaml(shared, project / "real_depth.yaml")
    sizes = [args.eval_imgsz[i:i + 2] for i in range(0, len(args.eval_imgsz), 2)]
    frames = {tuple(hw): real_frames(task, data_yaml, hw, 8) for hw in sizes}
    unlabeled = [p for f in UNLABELED for p in list_unlabeled(shared / "data" / f)] if args.adabn else []

    def keep(row: dict[str, Any]) -> None:
        key = (row["variant"], row["seed"], row["eval"])
        rows[:] = [r for r in rows if (r["variant"], r["seed"], r["eval"]) != key] + [row]
        store.write_text(json.dumps(rows, indent=1))

    for hw in sizes:
        keep({"variant": "row prior (baseline)", "settings": "", "seed": "-", "eval": f"{hw[0]}x{hw[1]}",
              "synthetic_val": None, "call": call, **score(task, RowPrior.build(), frames[tuple(hw)], project / "eval_prior")})
    for variant in args.variant:
        name, sep, settings = variant.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: '{variant}': expected NAME=SETTINGS")
        extra = parse_overrides(shlex.split(settings))
        if args.ensemble:
            runs = [project / f"{name}_s{seed}" for seed in args.seeds]
            missing = [str(r) for r in runs if not (r / "results.json").is_file()]
            if missing:
                raise SystemExit(f"error: --ensemble needs trained runs; missing: {', '.join(missing)}")
            model = ensemble([load_model(r, "cpu", task=task)[0] for r in runs])
            seeds = "+".join(str(s) for s in args.seeds)
            for hw in sizes:
                tag = f"{hw[0]}x{hw[1]}"
                keep({"variant": name, "settings": settings, "seed": seeds, "synthetic_val": None, "call": call,
                      "eval": f"{tag} ensemble", **score(task, model, frames[tuple(hw)], project / f"{name}_ens_{tag}")})
            print(f"{name} ensemble of seeds {seeds}: {rows[-1]['absrel']:.4f}", flush=True)
            continue
        for seed in args.seeds:
            run = visionlab.train("depth", **{**PROBE, **extra, "seed": seed, "project": str(project),
                                              "name": f"{name}_s{seed}", "exist_ok": True})
            synthetic_val = json.loads((run / "results.json").read_text())["val"]["absrel"]
            model, _ = load_model(run, "cpu", task=task)
            for hw in sizes:
                tag = f"{hw[0]}x{hw[1]}"
                base = {"variant": name, "settings": settings, "seed": seed, "synthetic_val": synthetic_val,
                        "call": call}
                keep({**base, "eval": tag, **score(task, model, frames[tuple(hw)], run / f"real_{tag}")})
                if args.adabn:
                    keep({**base, "eval": f"{tag} AdaBN", **score(task, adabn(model, unlabeled, hw),
                                                                 frames[tuple(hw)], run / f"real_{tag}_adabn")})
            print(f"{name} seed {seed}: " + ", ".join(f"{r['eval']} {r['absrel']:.4f}" for r in rows
                                                      if r["variant"] == name and r["seed"] == seed), flush=True)
    lines = report(rows)
    write_doc_block(Path(args.doc), "depth-probe", lines)
    print("\n".join(lines))
    return 0


def report(rows: list[dict[str, Any]]) -> list[str]:
    from visionlab.utils.runtime import environment_info

    env = environment_info()
    calls = list(dict.fromkeys(r["call"] for r in rows))  # in the order they ran
    order = {v: i for i, v in enumerate(dict.fromkeys(r["variant"] for r in rows if r["seed"] != "-"))}
    rows = sorted(rows, key=lambda r: (r["seed"] != "-", order.get(r["variant"], -1), r["eval"], str(r["seed"])))
    sources = sorted({s for r in rows for s in r["sources"]})
    settings = " ".join(f"{k}={json.dumps(v).replace(' ', '')}" for k, v in PROBE.items() if k != "mlflow")
    lines = ["### Depth probes: short teachers against the real frames",
             "",
             f"Probe teacher: `visionlab depth train {settings} seed=SEED` + the variant's settings; scored on the "
             "20 real frames of the depth recipe with its protocol (LSQ disparity alignment). The synthetic val "
             "AbsRel is on each variant's own val scenes (more rooms, painted rooms), so it compares only within "
             f"a variant. Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}.",
             "",
             "| variant | settings | seed | eval | synthetic val AbsRel | real AbsRel | real delta1 | "
             + " | ".join(sources) + " |",
             "|---" * (7 + len(sources)) + "|"]
    for r in rows:
        syn = f"{r['synthetic_val']:.3f}" if r["synthetic_val"] is not None else "-"
        lines.append(f"| {r['variant']} | `{r['settings'] or '(probe)'}` | {r['seed']} | {r['eval']} | {syn} | "
                     f"{r['absrel']:.4f} | {r['delta1']:.3f} | "
                     + " | ".join(f"{r['sources'].get(s, float('nan')):.3f}" for s in sources) + " |")
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["variant"], r["eval"]), []).append(r["absrel"])
    lines += ["", "Mean real AbsRel over seeds (spread = max - min):", ""]
    for (variant, ev), values in groups.items():
        spread = f", spread {max(values) - min(values):.4f} over {len(values)} seeds" if len(values) > 1 else ""
        lines.append(f"- {variant} ({ev}): {statistics.mean(values):.4f}{spread}")
    lines += ["", "Commands (rows accumulate over calls in PROJECT/probe.json):", ""]
    lines += [f"- `{c}`" for c in calls]
    return lines


if __name__ == "__main__":
    sys.exit(main())
