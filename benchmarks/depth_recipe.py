"""The Depth Anything V2 recipe at CPU scale, end to end, within a time budget (default one hour, 2 cores):

1. teacher: trained on the built-in synthetic scenes (metric depth labels; ``--rooms`` of them indoor rooms and
   tabletops, the rest streets);
2. pseudo labels: the teacher labels real unlabeled images (CamVid train + val images, no CamVid labels
   used, and shared/data/photos) with `visionlab depth pseudo-label`;
3. student: fine-tuned from the teacher (``--student-init``) on those pseudo labels plus ``--student-synthetic``
   synthetic scenes (0 = pseudo labels only, as in Depth Anything V2, whose 62M real images we do not have);
4. evaluation on every real depth frame of shared/data/depth (NYU, KITTI, TUM, Middlebury; a dataset YAML
   with sources and units is written into the run folder) of the teacher, the student and two trivial
   baselines measured in the same run: a constant depth and an image-row prior (nearer at the bottom).

AbsRel and delta1 (95% bootstrap CIs over images, per-source AbsRel) go into docs/benchmarks.md between
``<!-- depth-recipe:begin -->`` / ``<!-- depth-recipe:end -->``; the best/worst grids into docs/images/.

    python benchmarks/depth_recipe.py --shared ../shared [--minutes 60] [--smoke] [--help for every setting]

Epochs are "auto" by default: a few timed training steps of each model give seconds per image, and the
epochs are the largest number that fits the model's share of ``--minutes``. ``--smoke`` runs the whole
chain at a tiny size in about two minutes and writes its report into the run folder, not docs/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from doc_block import write_doc_block

REPO = Path(__file__).resolve().parents[1]
DOC_BLOCK = "depth-recipe"
# (source name, folder under shared/data/depth, format = unit/protocol defaults): every real depth frame
EVAL_SOURCES = [
    ("nyu", "metric3d_nyu_kitti/nyu_demo", "nyu"),  # /1000, 10 m, Eigen crop
    ("nyu_unidepth", "nyu_extra/unidepth_nyu", "nyu"),
    ("nyu_mmseg", "nyu_extra/mmseg_nyu_160x120", "nyu"),
    ("nyu_raw", "nyu_raw_slambook2", "nyu"),  # NYU-style raw Kinect frames, /1000
    ("kitti", "metric3d_nyu_kitti/kitti_demo", "kitti"),  # /256, 80 m, Garg crop
    ("tum", "tum_rgbd", "tum"),  # /5000
    ("middlebury", "middlebury_2001_2003", "folder"),  # disparity .npy (no units needed)
]
BUDGET_SHARE = {"teacher": 0.45, "student": 0.35}  # the rest: rendering, pseudo-labelling, evaluation


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=os.environ.get("VISIONLAB_SHARED", str(REPO.parent / "shared")))
    ap.add_argument("--minutes", type=float, default=60.0, help="total time budget for the auto epochs")
    ap.add_argument("--smoke", action="store_true", help="tiny end-to-end check (~2 min); report in the run folder")
    ap.add_argument("--project", default=str(REPO / "runs" / "depth_recipe"))
    ap.add_argument("--name", default="recipe")
    ap.add_argument("--doc", default=None, help="markdown file for the report (default docs/benchmarks.md)")
    ap.add_argument("--images-dir", default=None, help="where the best/worst grids go (default docs/images)")
    # teacher
    ap.add_argument("--teacher-model", default="depth_efficientnet_lite0")
    ap.add_argument("--teacher-pretrained", default="imagenet")
    ap.add_argument("--teacher-imgsz", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="default: 192x256 rounded to the model's input multiple (196x252 for the DPT ViTs)")
    ap.add_argument("--teacher-scenes", type=int, default=800, help="synthetic training scenes")
    ap.add_argument("--teacher-val-scenes", type=int, default=64)
    ap.add_argument("--rooms", type=float, default=0.5,
                    help="share of the synthetic scenes that are indoor rooms / tabletops (0 = streets only)")
    ap.add_argument("--textures", nargs="*", default=[],
                    help="image folders under shared/data painted on the synthetic rooms' surfaces "
                         "(synthetic_textures; e.g. the --unlabeled folders; never the evaluation frames)")
    ap.add_argument("--teacher-epochs", default="auto", help="int or auto (from the time budget)")
    ap.add_argument("--teacher-lr", type=float, default=0.001)
    # pseudo labels
    ap.add_argument("--unlabeled", nargs="+", default=["camvid/train", "camvid/val", "photos"],
                    help="image folders under shared/data (labels are never read)")
    ap.add_argument("--max-unlabeled", type=int, default=0, help="use only the first N unlabeled images (0 = all)")
    ap.add_argument("--pseudo-format", default="png16", choices=["png16", "npy"])
    # student
    ap.add_argument("--student-model", default="depth_efficientnet_lite0")
    ap.add_argument("--student-pretrained", default="imagenet")
    ap.add_argument("--student-init", default="teacher", choices=["pretrained", "teacher"],
                    help="fine-tune the teacher (default) or start from --student-pretrained weights")
    ap.add_argument("--student-synthetic", type=int, default=400,
                    help="synthetic scenes mixed into the student's pseudo labels (0 = pseudo labels only)")
    ap.add_argument("--student-imgsz", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="default: as the teacher's")
    ap.add_argument("--student-epochs", default="auto", help="int or auto (from the time budget)")
    ap.add_argument("--student-lr", type=float, default=0.001)
    # shared settings
    ap.add_argument("--eval-imgsz", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="network size for the real frames (default: the teacher's)")
    ap.add_argument("--tta-flip", action="store_true",
                    help="pseudo-label with the mirrored image averaged in (tta_flip=true), and also score teacher and "
                         "student that way (extra rows; the targets then use them)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-epochs", type=int, default=40, help="cap of the auto epochs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.smoke:  # every stage, tiny
        args.teacher_imgsz = args.student_imgsz = None
        args.teacher_scenes, args.teacher_val_scenes, args.max_unlabeled = 24, 4, 24
        args.student_synthetic = min(args.student_synthetic, 8)
        args.teacher_epochs = args.student_epochs = "1"
        args.batch, args.workers, args.name = 4, 0, "smoke"
    return args


def fit_sizes(args: argparse.Namespace) -> None:
    """Sizes left unset become 192x256 (64x96 with --smoke) rounded to the multiple the teacher's architecture
    needs (32 for the CNNs, 14 for the DPT ViTs); sizes given stay as given (a wrong one is refused in one line)."""
    from visionlab.models.registry import create_model
    from visionlab.tasks.base import get_task

    get_task("depth")  # registers the depth models
    if args.teacher_imgsz is None:
        base = [64, 96] if args.smoke else [192, 256]
        multiple = getattr(create_model(args.teacher_model, task="depth"), "input_multiple", 1) or 1
        args.teacher_imgsz = [max(multiple, round(side / multiple) * multiple) for side in base]
    args.student_imgsz = args.student_imgsz or args.teacher_imgsz
    args.eval_imgsz = args.eval_imgsz or args.teacher_imgsz


# ----------------------------------------------------------------------------- helpers


def seconds_per_image(model: str, imgsz: list[int], batch: int) -> float:
    """Measured cost of training one image (forward + loss + backward + AdamW), median of 3 steps."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from depth_timing import time_model

    return time_model(model, batch, tuple(imgsz), steps=3, warmup=1)["median_s"] / batch


def auto_epochs(value: str, model: str, imgsz: list[int], batch: int, n_train: int, n_val: int,
                budget_s: float, cap: int) -> tuple[int, str]:
    """(epochs, how they were chosen): an int as given, or the most that fit ``budget_s``."""
    if value != "auto":
        return int(value), "given"
    spi = seconds_per_image(model, imgsz, batch)
    epoch_s = spi * (n_train + n_val / 3) * 1.1  # eval is ~1/3 of a training step; 10% for data and logging
    epochs = max(1, min(cap, int(budget_s / epoch_s)))
    return epochs, f"auto: {spi * 1000:.0f} ms/image measured -> ~{epoch_s:.0f} s/epoch in {budget_s / 60:.1f} min"


def cli(mode: str, settings: dict[str, Any]) -> str:
    """The `visionlab depth MODE key=value ...` command equivalent to ``settings``."""
    def fmt(v: Any) -> str:
        return f"[{','.join(map(str, v))}]" if isinstance(v, (list, tuple)) else str(v)

    return f"visionlab depth {mode} " + " ".join(f"{k}={fmt(v)}" for k, v in settings.items())


def write_eval_yaml(shared: Path, path: Path) -> Path:
    """The dataset YAML of every real depth frame, one source per folder with its units and protocol."""
    import yaml

    sources = []
    for name, folder, fmt in EVAL_SOURCES:
        root = shared / "data" / "depth" / folder
        if root.is_dir():
            sources.append({"name": name, "path": str(root.resolve()), "format": fmt})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# every real depth frame of shared/data/depth; units and eval protocol per source\n"
                    + yaml.safe_dump({"name": "real_depth", "sources": sources}, sort_keys=False))
    return path


def student_data_yaml(run_dir: Path, synthetic: int) -> Path:
    """The student's data: the pseudo-label folder, plus synthetic scenes when ``synthetic`` > 0 (a dataset YAML)."""
    if not synthetic:
        return run_dir / "pseudo"
    import yaml

    path = run_dir / "student_data.yaml"
    sources = [{"name": "pseudo", "path": "pseudo"}, {"name": "synthetic", "path": "synthetic"}]
    path.write_text("# pseudo labels of the real unlabeled images + synthetic scenes with exact depth\n"
                    + yaml.safe_dump({"name": "student", "sources": sources}, sort_keys=False))
    return path


def link_unlabeled(shared: Path, folders: list[str], out: Path, limit: int) -> int:
    """One folder of symlinks (``<group>_<file>``) to every unlabeled image: nothing is copied."""
    from visionlab.data.depth import list_unlabeled

    out.mkdir(parents=True, exist_ok=True)
    files = [(folder.replace("/", "_"), p) for folder in folders for p in list_unlabeled(shared / "data" / folder)]
    files = files[:limit] if limit else files
    for group, p in files:
        link = out / f"{group}_{p.name}"
        if not link.exists():
            link.symlink_to(p.resolve())
    return len(files)


class ConstantDepth:
    """Baseline: the same disparity everywhere (after alignment: one depth for the whole image)."""

    label = "constant depth (baseline)"

    @staticmethod
    def build() -> Any:
        import torch
        from torch import nn

        class Constant(nn.Module):
            input_multiple = 1

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return torch.ones_like(x[:, :1])

        return Constant()


class RowPrior:
    """Baseline: disparity grows linearly from the top row to the bottom row (nearer at the bottom). After
    the per-image scale + shift fit this is the best ground-plane depth a camera looking ahead can guess."""

    label = "image-row prior (baseline)"

    @staticmethod
    def build() -> Any:
        import torch
        from torch import nn

        class Rows(nn.Module):
            input_multiple = 1

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                h = x.shape[-2]
                rows = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) / h
                return rows.view(1, 1, h, 1).expand(x.shape[0], 1, h, x.shape[-1]).contiguous()

        return Rows()


def real_frames(task: Any, data_yaml: Path, imgsz: list[int], batch: int) -> tuple[Any, Any]:
    """(config, dataset) of every real frame, decoded once and shared by every evaluated model."""
    from visionlab.cfg import build_config

    cfg = build_config(task.config_cls, "depth", {"data": str(data_yaml), "imgsz": imgsz, "batch": batch,
                                                   "workers": 0, "split": "val"})
    return cfg, task.build_dataset(cfg, "val", train=False)


def evaluate_real(task: Any, model: Any, cfg: Any, dataset: Any, out_dir: Path) -> dict:
    """Metrics of ``model`` on every real frame (+ best_worst.png and metrics.json in ``out_dir``)."""
    import torch

    from visionlab.engine.evaluator import evaluate, make_eval_loader

    device = torch.device("cpu")
    metrics, _ = evaluate(model, make_eval_loader(task, dataset, cfg, device, distributed=False), task, cfg,
                          device, distributed=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    task.save_visuals(model, dataset, out_dir, cfg, device)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


# ----------------------------------------------------------------------------- the recipe


def main() -> int:
    args = parse_args()
    shared = Path(args.shared)
    if not (shared / "data" / "depth").is_dir():
        print(f"skip: {shared}/data/depth not found (pass --shared or set VISIONLAB_SHARED)")
        return 0
    from visionlab.cfg import ConfigError
    from visionlab.data.io import DataError

    try:
        return run(args, shared)
    except (ConfigError, DataError) as e:  # a setting or a file the user can fix: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, shared: Path) -> int:
    fit_sizes(args)
    os.environ.setdefault("VISIONLAB_PROGRESS", "0")
    import torch
    from PIL import Image

    import visionlab
    from visionlab.engine.model_io import load_model
    from visionlab.tasks.base import get_task
    from visionlab.tasks.depth_modes import pseudo_label
    from visionlab.utils.runtime import environment_info, increment_path

    t_start = time.perf_counter()
    task = get_task("depth")
    run_dir = increment_path(Path(args.project) / args.name)
    run_dir.mkdir(parents=True)
    budget_s = args.minutes * 60
    commands = [f"python benchmarks/depth_recipe.py {' '.join(sys.argv[1:])}".rstrip()]
    common = {"batch": args.batch, "workers": args.workers, "seed": args.seed, "mlflow": False,
              "project": str(run_dir), "exist_ok": True}
    if args.textures:
        common["synthetic_textures"] = [str(shared / "data" / f) for f in args.textures]
    timings: dict[str, float] = {}

    data_yaml = write_eval_yaml(shared, run_dir / "real_depth.yaml")
    n_unlabeled = link_unlabeled(shared, args.unlabeled, run_dir / "unlabeled", args.max_unlabeled)
    print(f"run folder {run_dir}: eval data {data_yaml}, {n_unlabeled} unlabeled images")

    # ---- 1. teacher on synthetic scenes ----
    t0 = time.perf_counter()
    t_epochs, t_how = auto_epochs(args.teacher_epochs, args.teacher_model, args.teacher_imgsz, args.batch,
                                  args.teacher_scenes, args.teacher_val_scenes, budget_s * BUDGET_SHARE["teacher"],
                                  args.max_epochs)
    teacher_cfg = {"data": "synthetic", "model": args.teacher_model, "pretrained": args.teacher_pretrained,
                   "imgsz": args.teacher_imgsz, "synthetic_train": args.teacher_scenes,
                   "synthetic_val": args.teacher_val_scenes, "synthetic_rooms": args.rooms, "epochs": t_epochs, "lr": args.teacher_lr,
                   "name": "teacher", **common}
    commands.append(cli("train", teacher_cfg) + f"   # epochs {t_how}")
    print(commands[-1], flush=True)
    teacher_dir = visionlab.train("depth", **teacher_cfg)
    timings["teacher"] = time.perf_counter() - t0

    # ---- 2. pseudo labels on the real unlabeled images ----
    t0 = time.perf_counter()
    pseudo_cfg = {"model": str(teacher_dir), "source": str(run_dir / "unlabeled"), "project": str(run_dir),
                  "name": "pseudo", "batch": args.batch, "workers": args.workers,
                  "pseudo_format": args.pseudo_format, "keep_aspect": True}  # 3:2 photos are not squashed to 3:4
    if args.tta_flip:
        pseudo_cfg["tta_flip"] = True
    commands.append(cli("pseudo-label", pseudo_cfg))
    print(commands[-1], flush=True)
    pseudo = pseudo_label(task, dict(pseudo_cfg))
    timings["pseudo"] = time.perf_counter() - t0

    # ---- 3. student on the pseudo labels ----
    t0 = time.perf_counter()
    n_pseudo = pseudo["counts"]["labelled"]
    n_val = len(range(0, n_pseudo, 20))
    n_syn, n_syn_val = args.student_synthetic, args.student_synthetic // 10
    s_epochs, s_how = auto_epochs(args.student_epochs, args.student_model, args.student_imgsz, args.batch,
                                  n_pseudo - n_val + n_syn, n_val + n_syn_val, budget_s * BUDGET_SHARE["student"],
                                  args.max_epochs)
    start = {"model": str(teacher_dir / "weights" / "best.safetensors")} if args.student_init == "teacher" else \
        {"model": args.student_model, "pretrained": args.student_pretrained}
    student_data = student_data_yaml(run_dir, n_syn)
    student_cfg = {"data": str(student_data), **start, "imgsz": args.student_imgsz, "epochs": s_epochs,
                   "lr": args.student_lr, "name": "student", **common}
    if n_syn:
        student_cfg.update({"synthetic_train": n_syn, "synthetic_val": max(n_syn_val, 1), "synthetic_rooms": args.rooms})
    commands.append(cli("train", student_cfg) + f"   # epochs {s_how}")
    print(commands[-1], flush=True)
    student_dir = visionlab.train("depth", **student_cfg)
    timings["student"] = time.perf_counter() - t0

    # ---- 4. everything on every real frame, same protocol ----
    t0 = time.perf_counter()
    eval_cfg, frames = real_frames(task, data_yaml, args.eval_imgsz, args.batch)
    results: dict[str, dict[str, Any]] = {}
    rows = [("teacher", f"teacher ({args.teacher_model}, synthetic)", None),
            ("student", f"student ({args.student_model}, pseudo labels"
             f"{' + synthetic' if args.student_synthetic else ''})", None)]
    if args.tta_flip:
        rows += [(f"{key}_flip", f"{label} + flip TTA", None) for key, label, _ in rows]
    rows += [("constant", ConstantDepth.label, ConstantDepth.build), ("row_prior", RowPrior.label, RowPrior.build)]
    for key, label, make in rows:
        if make is None:
            run = {"teacher": teacher_dir, "student": student_dir}[key.removesuffix("_flip")]
            model, meta = load_model(run, "cpu", task=task)
            if key.endswith("_flip"):  # exactly what `visionlab depth val tta_flip=true` runs
                model = task.inference_model(model, eval_cfg.model_copy(update={"tta_flip": True}))
            params = meta["params"]
        else:
            model, params = make(), 0
        metrics = evaluate_real(task, model, eval_cfg, frames, run_dir / "eval" / key)
        results[key] = {"label": label, "params": params, "metrics": metrics}
        print(f"{label}: AbsRel {metrics['absrel']:.4f}  delta1 {metrics['delta1']:.4f}", flush=True)
    commands.append(cli("val", {"model": str(student_dir), "data": str(data_yaml), "imgsz": args.eval_imgsz,
                                "split": "val"}) + "   # (and the same for the teacher; baselines in this script)"
                    + ("; tta_flip=true for the + flip TTA rows" if args.tta_flip else ""))
    timings["eval"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    # ---- report ----
    doc = Path(args.doc) if args.doc else (run_dir / "benchmarks_smoke.md" if args.smoke else REPO / "docs" / "benchmarks.md")
    images = Path(args.images_dir) if args.images_dir else (run_dir / "images" if args.smoke else REPO / "docs" / "images")
    images.mkdir(parents=True, exist_ok=True)
    grids = {}
    for key in ("teacher", "student") + (("student_flip",) if args.tta_flip else ()):
        src = run_dir / "eval" / key / "best_worst.png"
        if src.is_file():
            grids[key] = images / f"depth_recipe_{key}_best_worst.png"
            # the figure is opaque: RGB keeps every pixel and drops a quarter of the bytes
            Image.open(src).convert("RGB").save(grids[key], optimize=True)
    lines = report(args, results, timings, commands, run_dir, data_yaml, pseudo, t_epochs, s_epochs, grids, doc,
                   environment_info())
    write_doc_block(doc, DOC_BLOCK, lines)
    print("\n".join(lines))
    print(f"\nreport written to {doc}; run folder {run_dir}; torch threads {torch.get_num_threads()}")
    return 0


def report(args: argparse.Namespace, results: dict, timings: dict, commands: list[str], run_dir: Path,
           data_yaml: Path, pseudo: dict, t_epochs: int, s_epochs: int, grids: dict, doc: Path, env: dict) -> list[str]:
    """The markdown block between the depth-recipe markers."""
    def ci(m: dict, k: str) -> str:
        return f"{m[k]:.3f} [{m[k + '_ci_low']:.3f}, {m[k + '_ci_high']:.3f}]"

    sources = sorted(k[: -len("/absrel")] for k in results["teacher"]["metrics"] if k.endswith("/absrel"))
    counts = {s: int(results["teacher"]["metrics"][f"{s}/images"]) for s in sources}
    flip = "_flip" if args.tta_flip else ""  # the targets judge the models as they are best used
    student, teacher, rows = (results[k]["metrics"]["absrel"] for k in (f"student{flip}", f"teacher{flip}", "row_prior"))
    gain = 1 - student / rows
    met_rows, met_teacher = gain >= 0.30, student <= teacher
    lines = [
        "## Depth: teacher -> pseudo labels -> student (Depth Anything V2 recipe, CPU scale)" + (" [SMOKE]" if args.smoke else ""),
        "",
        f"Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']}, "
        f"{'GPU ' + ', '.join(env['gpus']) if env['gpus'] else 'no GPU'}; run {time.strftime('%Y-%m-%d')}; "
        f"budget {args.minutes:.0f} min, wall {timings['total'] / 60:.1f} min (teacher {timings['teacher'] / 60:.1f}, "
        f"pseudo labels {timings['pseudo'] / 60:.1f}, student {timings['student'] / 60:.1f}, "
        f"evaluation {timings['eval'] / 60:.1f}).",
        "",
        f"Evaluation: {int(results['teacher']['metrics']['images'])} real frames ({', '.join(f'{s} {n}' for s, n in counts.items())}; "
        f"dataset YAML `{data_yaml.name}` in the run folder), images resized to {args.eval_imgsz[0]}x{args.eval_imgsz[1]}, "
        "metrics on the native ground truth after a per-image least-squares scale + shift in disparity "
        "(`align=lsq_disparity`), NYU Eigen crop / KITTI Garg crop and depth caps; mean over images, "
        "[95% bootstrap CI].",
        f"Teacher: {args.teacher_model} (pretrained={args.teacher_pretrained}), {args.teacher_scenes} synthetic scenes, "
        f"{t_epochs} epochs at {args.teacher_imgsz[0]}x{args.teacher_imgsz[1]}. Pseudo labels: "
        f"{pseudo['counts']['labelled']} unlabeled images ({', '.join(args.unlabeled)}; no labels read). "
        f"Student: {args.student_model} (init {args.student_init if args.student_init == 'teacher' else args.student_pretrained}), "
        f"{s_epochs} epochs at {args.student_imgsz[0]}x{args.student_imgsz[1]} on the pseudo labels"
        + (f" + {args.student_synthetic} synthetic scenes." if args.student_synthetic else " only.")
        + f" Synthetic scenes: {args.rooms:.0%} indoor rooms / tabletops (`synthetic_rooms`), the rest streets"
        + (f"; room surfaces painted with the real photos of {', '.join(args.textures)} (`synthetic_textures`)."
           if args.textures else "."),
        "",
        "| model | params | AbsRel (lower is better) | delta1 (higher is better) | " + " | ".join(f"{s} AbsRel" for s in sources) + " |",
        "|---|---|---|---|" + "---|" * len(sources),
    ]
    for r in results.values():
        m = r["metrics"]
        lines.append(f"| {r['label']} | {r['params'] / 1e6:.2f}M | {ci(m, 'absrel')} | {ci(m, 'delta1')} | "
                     + " | ".join(f"{m.get(f'{s}/absrel', float('nan')):.3f}" for s in sources) + " |")
    lines += [
        "",
        f"Targets{' (flip TTA rows)' if flip else ''}: student AbsRel {student:.3f} is {abs(gain):.0%} {'lower' if gain >= 0 else 'higher'} than the "
        f"row prior's {rows:.3f} (target: at least 30% lower) -> "
        f"{'met' if met_rows else 'NOT met'}; student {student:.3f} vs teacher {teacher:.3f} (target: no worse) -> "
        f"{'met' if met_teacher else 'NOT met'}. With {int(results['teacher']['metrics']['images'])} frames the "
        "CIs are wide: read them before the means.",
        "",
        "Commands (exactly what ran):",
        "",
        "```bash",
        *commands,
        "```",
    ]
    for key, path in grids.items():
        rel = os.path.relpath(path, doc.parent)
        lines += ["", f"{key.capitalize().replace('_flip', ' + flip TTA')}: best and worst real frames by AbsRel "
                  "(image | ground truth | prediction | error)",
                  "", f"![{key} best/worst]({rel})"]
    return lines


if __name__ == "__main__":
    sys.exit(main())
