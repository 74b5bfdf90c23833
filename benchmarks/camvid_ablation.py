"""CamVid ablations for the thin / rare categories (object, human): each ablation is the CamVid recipe
(benchmarks/camvid_recipe.yaml) with a few settings changed, trained on CamVid train and scored on CamVid
val; test-time augmentation rows re-score an existing run's best checkpoint. One table in the
`camvid-ablations` block of docs/benchmarks.md, every row with the command that made it.

    python benchmarks/camvid_ablation.py --shared ../shared --project /tmp/abl \\
        --run baseline=/tmp/bench/runs/camvid \\
        --train lovasz="loss=ce_lovasz" --train rare_crop="rare_crop=0.5" \\
        --tta flip="tta_flip=true" --tta flip_ms="tta_flip=true tta_scales=[1.0,1.25,1.5]"

``--run NAME=DIR`` reports a finished run of the recipe (the first one is the baseline the Δ columns refer
to); ``--train NAME="k=v ..."`` trains one; ``--tta NAME="k=v ..."`` re-scores the baseline's checkpoint.
Rows accumulate in ``PROJECT/ablations.json``, so ablations can be run one at a time; without that file (a
new machine, a cleaned /tmp) the rows start from the table already in the doc, so a re-run adds to it instead of
replacing it (those rows have no run folder: ``--tta-on`` needs a row trained or ``--run`` here).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from doc_block import read_doc_block, write_doc_block
from run_curve import training_curve

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "benchmarks" / "camvid_recipe.yaml"
FOCUS = ("object", "human")


def pairs(values: list[str]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: '{v}': expected NAME=SETTINGS")
        out.append((name, rest))
    return out


def row_from_run(name: str, run: Path, settings: str, command: str) -> dict[str, Any]:
    """A training row: val metrics, training minutes until the best checkpoint and in all (per-epoch
    validation excluded), from the run's results.json and metrics.csv."""
    res = json.loads((run / "results.json").read_text())
    curve = training_curve(run, "miou")
    best = int(res["best_epoch"])
    to_best = next(t for e, t, _ in curve if e == best) / 60
    total = curve[-1][1] / 60
    return {"name": name, "kind": "train", "run": str(run), "settings": settings, "command": command,
            "metrics": res["val"],
            "train_min": round(to_best, 1), "total_min": round(total, 1), "best_epoch": best}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("VISIONLAB_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--project", default=str(REPO / "runs" / "ablations"))
    ap.add_argument("--doc", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR of a finished recipe run")
    ap.add_argument("--train", action="append", default=[], help='NAME="k=v ...": train the recipe with these')
    ap.add_argument("--tta", action="append", default=[], help='NAME="k=v ...": re-score the baseline with these')
    ap.add_argument("--tta-on", default=None, help="re-score this training row's checkpoint instead of the baseline's")
    args = ap.parse_args()
    camvid = Path(args.shared) / "data" / "camvid"
    if not (camvid / "train").is_dir():
        print(f"skip: CamVid not found at {camvid} (pass --shared or set VISIONLAB_SHARED)")
        return 0

    import visionlab
    from visionlab.cfg import parse_overrides

    project = Path(args.project)
    project.mkdir(parents=True, exist_ok=True)
    store = project / "ablations.json"
    rows: list[dict[str, Any]] = (json.loads(store.read_text()) if store.is_file()
                                  else rows_from_doc(read_doc_block(Path(args.doc), "camvid-ablations")))

    def keep(row: dict[str, Any]) -> None:
        rows[:] = [r for r in rows if r["name"] != row["name"]] + [row]
        store.write_text(json.dumps(rows, indent=1))

    data = f"camvid:{camvid}"
    for name, run in pairs(args.run):
        keep(row_from_run(name, Path(run), "", "python benchmarks/camvid_segment.py (the recipe as it is)"))
    for name, settings in pairs(args.train):
        extra = parse_overrides(shlex.split(settings))
        t0 = time.perf_counter()
        run = visionlab.train("segment", cfg=str(RECIPE), data=data, project=str(project), name=name,
                              exist_ok=True, mlflow=False, **extra)
        print(f"{name}: {(time.perf_counter() - t0) / 60:.1f} min wall")
        keep(row_from_run(name, run, settings, "visionlab segment train cfg=benchmarks/camvid_recipe.yaml "
                                               f"data=camvid:DIR {settings}"))
    baseline = next((r for r in rows if r["kind"] == "train" and r["run"] and (args.tta_on in (None, r["name"]))),
                    None)
    for name, settings in pairs(args.tta):
        if baseline is None:
            raise SystemExit(f"error: --tta needs a trained row{' named ' + args.tta_on if args.tta_on else ''} "
                             "(--run NAME=DIR or --train first)")
        extra = parse_overrides(shlex.split(settings))
        t0 = time.perf_counter()
        metrics = visionlab.val("segment", model=baseline["run"], data=data, split="val", project=str(project),
                                name=f"val_{name}", exist_ok=True, plots=False, **extra)
        keep({"name": name, "kind": "tta", "run": baseline["run"], "settings": settings, "metrics": metrics,
              "eval_s": round(time.perf_counter() - t0, 1),
              "command": f"visionlab segment val model={baseline['name']}/weights/best.safetensors {settings}"})
        print(f"{name} on {baseline['name']}: mIoU {metrics['miou']:.4f}")
    write_doc_block(Path(args.doc), "camvid-ablations", report(rows))
    print("\n".join(report(rows)))
    return 0


def rows_from_doc(lines: list[str]) -> list[dict[str, Any]]:
    """The rows of a table ``report`` wrote (metrics, minutes, settings, commands), without run folders."""
    header = next((ln for ln in lines if ln.startswith("| ablation |")), None)
    if header is None:
        return []
    cols = [c.strip().strip("*") for c in header.strip("|").split("|")]
    cats = cols[5:-2]
    commands = {}
    for ln in lines:
        if ln.startswith("- ") and ": `" in ln:
            name, _, cmd = ln[2:].partition(": `")
            commands[name] = cmd.rstrip("`")
    rows = []
    for ln in lines:
        if not ln.startswith("| ") or ln == header:
            continue
        cells = [c.strip() for c in ln.strip("|").split("|")]
        name, settings, minutes = cells[0], cells[1].strip("`"), cells[2]
        row: dict[str, Any] = {"name": name, "run": "", "command": commands.get(name, ""),
                               "settings": "" if settings == "(recipe)" else settings,
                               "metrics": {"miou": float(cells[3]),
                                           **{f"iou/{c}": float(v) for c, v in zip(cats, cells[5:-2])}}}
        if minutes.startswith("(eval"):
            row.update(kind="tta", eval_s=float(minutes.split()[1]))
        else:
            to_best, _, rest = minutes.partition(" / ")
            row.update(kind="train", train_min=float(to_best), total_min=float(rest.split()[0]),
                       best_epoch=int(rest.rsplit(" ", 1)[1].rstrip(")")))
        rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    base = rows[0]["metrics"]
    cats = [k.split("/")[1] for k in base if k.startswith("iou/")]
    lines = ["### Ablations for object and human (CamVid val, one seed each)", "",
             "Each training row is the recipe (`benchmarks/camvid_recipe.yaml`) with the settings shown; TTA rows "
             "re-score the checkpoint of the row their command names. "
             f"Δ is against the first row ({rows[0]['name']}). Target: "
             "object >= 0.45, human >= 0.70, mIoU >= 0.80 within 30 min of CPU training.", "",
             "| ablation | settings | training min (to best / all) | mIoU | Δ mIoU | " +
             " | ".join(f"**{c}**" if c in FOCUS else c for c in cats) + " | Δ object | Δ human |",
             "|---|---|---|---|---|" + "---|" * len(cats) + "---|---|"]
    for r in rows:
        m = r["metrics"]
        minutes = (f"{r['train_min']} / {r['total_min']} (best epoch {r['best_epoch']})" if r["kind"] == "train"
                   else f"(eval {r['eval_s']:.0f} s)")
        lines.append(f"| {r['name']} | `{r['settings'] or '(recipe)'}` | {minutes} | {m['miou']:.4f} | "
                     f"{m['miou'] - base['miou']:+.4f} | " + " | ".join(f"{m['iou/' + c]:.3f}" for c in cats) +
                     f" | {m['iou/object'] - base['iou/object']:+.3f} | {m['iou/human'] - base['iou/human']:+.3f} |")
    lines += ["", "Commands (DIR = ../shared/data/camvid):", ""] + [f"- {r['name']}: `{r['command']}`" for r in rows]
    return lines


if __name__ == "__main__":
    sys.exit(main())
