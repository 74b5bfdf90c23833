"""The depth task's extra modes and tools (kept out of ``tasks/depth.py`` so that stays the Task interface):

- ``pseudo_label``: ``visionlab depth pseudo-label model=TEACHER source=DIR project=.. name=..``: unlabeled
  images -> teacher disparity, one label file per image + ``manifest.json``. The folder is itself a dataset
  (``depth train data=DIR``). Resumable: every label is written atomically and carries its own scale (PNG
  text chunk), so a restart keeps every label already on disk and recomputes only the missing ones.
  Under torchrun each rank labels its share; rank 0 merges one manifest.
- ``features``: a ViT depth model's DINOv2 patch features as ``.npy`` + a PCA-to-RGB picture.
- ``check_depth_data``: ``visionlab data check --task depth SPEC``: names every unusable file.
- ``best_worst_grid``: image | ground truth | prediction | error for the best and worst images by AbsRel.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from visionlab.data.io import DataError
from visionlab.utils.progress import console

MANIFEST_EVERY_S = 60.0  # periodic manifest rewrite while pseudo-labelling (progress survives a kill)


# ----------------------------------------------------------------------------- best / worst grid


@torch.no_grad()
def best_worst_grid(task: Any, model: nn.Module, dataset: Dataset, cfg: Any, device: torch.device,
                    save_path: Path, n: int = 4, metrics: Any = None) -> Path | None:
    """Rank every image of ``dataset`` by AbsRel (``DepthMetrics`` records), then draw one row per image for
    the ``n`` best and ``n`` worst: image | ground truth | prediction (disparity) | AbsRel error map."""
    from visionlab.engine.evaluator import evaluate, make_eval_loader
    from visionlab.metrics.depth import align_prediction
    from visionlab.tasks.depth import colorize_disparity

    if not len(dataset):
        return None
    if metrics is None or not getattr(metrics, "records", None):  # not evaluated on this dataset yet
        _, metrics = evaluate(model, make_eval_loader(task, dataset, cfg, device, distributed=False), task, cfg,
                              device, distributed=False)
    best, worst = metrics.extremes(n)
    chosen = best + [r for r in worst if r["index"] not in {b["index"] for b in best}]
    if not chosen:  # no image had a pixel to score (e.g. every depth outside min_depth..max_depth)
        return None
    rows, labels = [], []
    for rank, rec in enumerate(chosen):
        batch = task.preprocess(task.collate([dataset[rec["index"]]]), device, cfg)
        target = batch["target"][0].reshape(batch["target"][0].shape[-2:]).double()
        valid = batch["valid"][0].reshape(target.shape).bool() & (target > 0)
        pred = task.postprocess(model(batch["image"]).float()[0], tuple(target.shape))
        gt_depth = 1.0 / target if int(batch["space"][0]) == 1 else target
        gt_depth = torch.where(valid, gt_depth, torch.zeros_like(gt_depth))
        lo, hi = (float(batch[k][0]) for k in ("min_depth", "max_depth"))
        depth = align_prediction(torch.from_numpy(pred).to(target.device)[valid], gt_depth[valid], cfg.align,
                                 (lo if lo == lo else None, hi if hi == hi else None))
        error = torch.zeros_like(gt_depth)
        error[valid] = (depth - gt_depth[valid]).abs() / gt_depth[valid]
        valid_np = valid.cpu().numpy()
        disp_gt = np.where(valid_np, 1.0 / np.maximum(gt_depth.cpu().numpy(), 1e-12), 0)
        image = batch["image"][0].permute(1, 2, 0).round().clamp(0, 255).byte().cpu().numpy()
        from visionlab.data.transforms import resize_image

        rows.append([resize_image(image, tuple(target.shape)), colorize_disparity(disp_gt, cfg.colormap, valid_np),
                     colorize_disparity(pred, cfg.colormap), _error_map(error.cpu().numpy(), valid_np)])
        kind = "best" if rank < len(best) else "worst"
        name = dataset.name_of(rec["index"]) if hasattr(dataset, "name_of") else f"#{rec['index']}"
        labels.append(f"{kind}: {rec['source']}/{name}\nAbsRel {rec['absrel']:.3f}")
    return _save_grid(rows, labels, ["image", "ground truth (disparity)", "prediction (disparity)",
                                     f"AbsRel error (0..0.5, align={cfg.align})"], save_path)


def _error_map(error: np.ndarray, valid: np.ndarray, cap: float = 0.5) -> np.ndarray:
    """Per-pixel relative error on a fixed 0..cap scale (comparable across rows); invalid pixels black."""
    from matplotlib import colormaps

    lut = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    out = lut[(np.clip(error / cap, 0, 1) * 255).astype(np.uint8)]
    out[~valid] = 0
    return out


def _save_grid(rows: list[list[np.ndarray]], labels: list[str], titles: list[str], save_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(titles), figsize=(3.2 * len(titles), 2.5 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            axes[r, c].imshow(panel)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(labels[r], fontsize=8)
    fig.tight_layout()
    save_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(save_path, dpi=100)
    plt.close(fig)
    return save_path


# ----------------------------------------------------------------------------- pseudo-labelling


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _label_path(out_dir: Path, name: str, fmt: str) -> Path:
    return out_dir / "labels" / f"{name}.{'npy' if fmt == 'npy' else 'png'}"


def _save_label(out_dir: Path, name: str, image: Path, disparity: np.ndarray, fmt: str) -> dict[str, Any]:
    """One label file, atomically; returns its manifest item (disparity = stored value * scale)."""
    from visionlab.tasks.depth import save_disparity_png16
    from visionlab.utils.files import atomic_write

    path = _label_path(out_dir, name, fmt)
    if fmt == "npy":
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file object: np.save would add ".npy" to the temp name
                np.save(f, disparity.astype(np.float32))

        atomic_write(path, write)
        scale = 1.0
    else:
        scale = save_disparity_png16(path, disparity)
    return {"name": name, "image": str(image.resolve()), "label": f"labels/{path.name}", "scale": scale}


def _existing_label(out_dir: Path, name: str, image: Path, fmt: str) -> dict[str, Any] | None:
    """The manifest item of a label already on disk that is complete and fits its image; else None."""
    from PIL import Image

    from visionlab.data.io import image_size

    path = _label_path(out_dir, name, fmt)
    if not path.is_file():
        return None
    try:
        if fmt == "npy":
            shape, scale = np.load(path, mmap_mode="r", allow_pickle=False).shape, 1.0
        else:
            with Image.open(path) as img:
                img.load()  # decodes fully: a truncated file fails here
                scale, shape = float(img.text["disparity_scale"]), (img.height, img.width)
        h, w = image_size(image)  # (height, width)
    except (OSError, ValueError, KeyError, DataError):
        return None
    if tuple(shape) != (h, w):
        return None
    return {"name": name, "image": str(image.resolve()), "label": f"labels/{path.name}", "scale": scale}


RESUME_KEYS = ("teacher_sha256", "source", "imgsz", "keep_aspect", "tta_flip", "tta_scales", "pseudo_format")


def _check_resumable(out_dir: Path, info: dict[str, Any]) -> None:
    """A pseudo-label folder resumes only with the settings its labels were made with: labels of another
    teacher, size or TTA must never be reused under this call's manifest, nor another source's dropped."""
    from visionlab.cfg import ConfigError

    manifests = [out_dir / "manifest.json", *sorted(out_dir.glob("manifest.rank*.json"))]
    if not any(m.is_file() for m in manifests) and any((out_dir / "labels").glob("*")):
        raise ConfigError(f"{out_dir}/labels holds labels but there is no manifest.json to say which teacher and "
                          "settings made them: pick another name= (or delete the folder to relabel)")
    for path in manifests:
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable manifest ({e}); delete the folder or pick another name=") from None
        made_with = {k: old[k] for k in RESUME_KEYS if k in old}
        if "source" in made_with:  # older manifests kept the path as typed
            made_with["source"] = str(Path(made_with["source"]).resolve())
        diff = [k for k, v in made_with.items() if v != info[k]]
        if diff:
            was = ", ".join(f"{k}={made_with[k]}" for k in diff)
            now = ", ".join(f"{k}={info[k]}" for k in diff)
            raise ConfigError(f"{out_dir} holds pseudo labels made with {was}, not {now}: pick another name= "
                              "(or delete the folder to relabel)")


def pseudo_label(task: Any, overrides: dict[str, Any]) -> dict[str, Any]:
    """``visionlab depth pseudo-label model=TEACHER source=DIR [project= name= batch= workers= imgsz=
    pseudo_format=]``: see the module docstring. Returns the manifest's summary (without the items)."""
    from visionlab.cfg import ConfigError
    from visionlab.data.depth import list_unlabeled, write_pseudo_manifest
    from visionlab.engine import distributed as dist
    from visionlab.engine.evaluator import eval_config
    from visionlab.engine.model_io import check_input_size, load_model, resolve_weights
    from visionlab.engine.predictor import image_loader
    from visionlab.engine.sources import output_names
    from visionlab.utils.progress import track
    from visionlab.utils.runtime import configure_cpu

    overrides = dict(overrides)
    if not overrides.get("source"):
        raise ConfigError("pseudo-label needs source=DIR (a folder of unlabeled images)")
    overrides.setdefault("name", "pseudo")
    cfg = eval_config(task, overrides, "pseudo-label")
    device = dist.setup(cfg.device)
    configure_cpu(cfg.threads)
    model, meta = load_model(cfg.model, device, task=task)
    check_input_size(model, cfg, meta["arch"])
    model = task.inference_model(model, cfg)  # tta_flip / tta_scales
    out_dir = Path(cfg.project) / cfg.name  # never auto-incremented: the same folder resumes
    (out_dir / "labels").mkdir(parents=True, exist_ok=True)
    images = list_unlabeled(cfg.source)
    names = output_names(images)
    mine = list(zip(images, names))[dist.rank()::dist.world_size()]
    info = {"teacher": str(resolve_weights(cfg.model)), "teacher_arch": meta["arch"],
            "teacher_sha256": file_sha256(resolve_weights(cfg.model)), "source": str(Path(cfg.source).resolve()),
            "imgsz": list(cfg.imgsz), "keep_aspect": cfg.keep_aspect,
            "tta_flip": cfg.tta_flip, "tta_scales": list(cfg.tta_scales), "pseudo_format": cfg.pseudo_format, "space": "disparity (relative)"}
    _check_resumable(out_dir, info)

    done: dict[str, dict[str, Any]] = {}
    todo = []
    for image, name in mine:  # resume: keep every complete label already on disk
        item = _existing_label(out_dir, name, image, cfg.pseudo_format)
        if item is not None:
            done[name] = item
        else:
            todo.append((image, name))
    reused, skipped, computed = len(done), [], 0
    if dist.is_main():
        console.print(f"[bold]depth pseudo-label[/] {len(images)} images -> {out_dir} (teacher {meta['arch']}, "
                      f"imgsz {list(cfg.imgsz)}, {dist.world_size()} rank(s)); {reused} already labelled on rank 0")

    def partial_manifest() -> None:
        """Progress so far (a usable, incomplete dataset); the final manifest replaces it. Under torchrun
        each rank writes its own part file (rank 0 merges them at the end)."""
        from visionlab.utils.files import atomic_write_json

        items = [done[n] for _, n in mine if n in done]
        if dist.world_size() == 1:
            write_pseudo_manifest(out_dir, items, complete=False, **info)
        else:
            atomic_write_json(out_dir / f"manifest.rank{dist.rank()}.json", {"items": items, **info})

    partial_manifest()  # at once: a run killed before its first periodic write still says who made its labels
    last_write = time.monotonic()
    loader = image_loader(todo, cfg.batch, cfg.workers)
    for batch in track(loader, total=len(loader), description="pseudo-label"):
        good = [s for s in batch if s["error"] is None]
        skipped += [s["error"] for s in batch if s["error"] is not None]
        results = task.infer(model, [s["image"] for s in good], tuple(cfg.imgsz), device,
                             keep_aspect=cfg.keep_aspect)
        for sample, disparity in zip(good, results):
            done[sample["name"]] = _save_label(out_dir, sample["name"], Path(sample["path"]), disparity,
                                               cfg.pseudo_format)
            computed += 1
        if time.monotonic() - last_write > MANIFEST_EVERY_S:
            partial_manifest()
            last_write = time.monotonic()

    parts = dist.gather_objects({"items": done, "skipped": skipped, "reused": reused, "computed": computed})
    labelled = sum(len(p["items"]) for p in parts)
    summary: dict[str, Any] = {}
    if dist.is_main():
        merged = {n: it for p in parts for n, it in p["items"].items()}
        items = [merged[n] for n in names if n in merged]  # source order: the train/val split is deterministic
        counts = {"images": len(images), "labelled": len(items), "reused": sum(p["reused"] for p in parts),
                  "computed": sum(p["computed"] for p in parts),
                  "skipped": sum(len(p["skipped"]) for p in parts)}
        summary = {**info, "counts": counts, "skipped": [s for p in parts for s in p["skipped"]],
                   "ranks": dist.world_size(), "complete": True,
                   "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_pseudo_manifest(out_dir, items, **summary)
        for stale in out_dir.glob("manifest.rank*.json"):
            stale.unlink()
        console.print(f"{counts['labelled']}/{counts['images']} labelled ({counts['computed']} computed, "
                      f"{counts['reused']} reused, {counts['skipped']} skipped) -> [bold]{out_dir}[/]; "
                      f"train on it with `visionlab depth train data={out_dir}`")
        for reason in summary["skipped"]:
            console.print(f"[yellow]skipped[/] {reason}", soft_wrap=True)
    dist.barrier()
    dist.cleanup()
    if not labelled:
        raise DataError(f"source={cfg.source}: none of the {len(images)} image(s) could be read "
                        f"(first problem: {next((s for p in parts for s in p['skipped']), '?')})")
    return summary


# ----------------------------------------------------------------------------- features


def pca_rgb(features: torch.Tensor) -> np.ndarray:
    """CxHxW features -> HxWx3 uint8: the first three principal components over the H*W positions, each
    stretched over its 1st..99th percentile (the usual DINOv2 visualisation)."""
    c, h, w = features.shape
    x = features.reshape(c, h * w).T.double()
    x = x - x.mean(0, keepdim=True)
    k = min(3, *x.shape)
    _, _, v = torch.linalg.svd(x, full_matrices=False)
    proj = (x @ v[:k].T).numpy()
    if k < 3:
        proj = np.concatenate([proj, np.zeros((proj.shape[0], 3 - k))], axis=1)
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    rgb = np.clip((proj - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
    return (rgb.reshape(h, w, 3) * 255).round().astype(np.uint8)


@torch.no_grad()
def features(task: Any, overrides: dict[str, Any]) -> Path:
    """``visionlab depth features model=VIT_MODEL source=IMAGE|DIR [imgsz= project= name=]``: per image
    ``<name>.npy`` (float32 [layers, C, H/14, W/14], the model's ``features()``) and ``<name>_pca.png``
    (last layer's PCA as RGB, upscaled to the input size)."""
    from PIL import Image

    from visionlab.cfg import ConfigError
    from visionlab.data.io import read_image
    from visionlab.engine.evaluator import eval_config
    from visionlab.engine.model_io import check_input_size, load_model
    from visionlab.engine.sources import list_sources, output_names
    from visionlab.utils.runtime import configure_cpu, increment_path, select_device

    overrides = dict(overrides)
    overrides.setdefault("name", "features")
    cfg = eval_config(task, overrides, "features")
    device = select_device(cfg.device)
    configure_cpu(cfg.threads)
    model, meta = load_model(cfg.model, device, task=task)
    if not callable(getattr(model, "features", None)):
        raise ConfigError(f"model={cfg.model}: {meta['arch']} has no features() (patch features exist for the "
                          "DINOv2 ViT models dpt_vits / dpt_vitb / dpt_vitl only)")
    check_input_size(model, cfg, meta["arch"])
    sources = list_sources(cfg.source, task)
    save_dir = increment_path(Path(cfg.project) / cfg.name, cfg.exist_ok)
    save_dir.mkdir(parents=True, exist_ok=True)
    for path, name in zip(sources, output_names(sources)):
        image = task.prepare(read_image(path, upright=True), tuple(cfg.imgsz))
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device)
        maps = torch.stack([f[0].float().cpu() for f in model.features(x)])  # layers x C x h x w
        np.save(save_dir / f"{name}.npy", maps.numpy())
        rgb = pca_rgb(maps[-1])
        Image.fromarray(rgb).resize((x.shape[-1], x.shape[-2]), Image.NEAREST).save(save_dir / f"{name}_pca.png")
    console.print(f"features of {len(sources)} image(s) ({tuple(maps.shape)} each, {meta['arch']}) in "
                  f"[bold]{save_dir}[/]")
    return save_dir


# ----------------------------------------------------------------------------- data check, predict sources


def depth_dataset_images(source: str) -> list[Path] | None:
    """The RGB images of a depth dataset spec (its val split, else test, else train; every source of a
    YAML), or None when ``source`` is not a depth dataset (a plain folder of images, an image file)."""
    from visionlab.data.depth import pseudo_items
    from visionlab.data.depth_layouts import KIND_DEFAULTS, list_depth_items, parse_depth_spec

    path = Path(source)
    kind, sep, _ = source.partition(":")
    explicit = (sep and kind in KIND_DEFAULTS) or path.suffix.lower() in (".yaml", ".yml", ".mat")
    if source == "synthetic" or not (explicit or path.is_dir()):
        return None  # synthetic scenes are rendered, not files; anything else is the engine's business
    try:
        sources = parse_depth_spec(source)
    except DataError:
        if explicit:
            raise
        return None
    images: list[Path] = []
    files_used: set[Path] = set()
    same_stem = False  # any <id>.jpg + <id>.png pair: also what a folder of photos in two formats looks like
    for i, src in enumerate(sources):
        src = dataclasses.replace(src, depth_scale=src.depth_scale or 1.0)  # units do not matter for listing
        if src.kind == "nyu_mat":
            raise DataError(f"source={source}: the images of {src.root} are inside the .mat; evaluate it with "
                            "`visionlab depth val data=...` or predict on image files")
        chosen = None
        for split in ("val", "test", "train"):
            try:
                items = pseudo_items(src, i, split) if src.kind == "pseudo" else list_depth_items(src, i, split, [])
            except DataError:
                continue
            if items and chosen is None:
                chosen = [it.image for it in items if it.image is not None]
            if not explicit:  # a plain folder: every split's files, to tell its pairs from photos below
                files_used |= {p.resolve() for it in items for p in (it.image, it.target) if isinstance(p, Path)}
                same_stem |= any(isinstance(it.target, Path) and it.image is not None
                                 and it.target.stem == it.image.stem and it.target.parent == it.image.parent
                                 for it in items)
            elif chosen:
                break
        images += chosen or []
    if same_stem and not explicit:
        # photos.jpg next to photos.png: a depth dataset only if every image file is one of its pairs;
        # otherwise a folder of photos, every one of them predicted on
        from visionlab.data.depth import list_unlabeled

        if any(p.resolve() not in files_used for p in list_unlabeled(path)):
            return None
    if not images and not explicit:
        return None  # a folder of images without depth files: plain images
    if not images:
        raise DataError(f"source={source}: no val, test or train split with RGB images found")
    return images




def check_depth_data(task: Any, spec: str, out: Path | None, console_: Any) -> int:
    """Decode every file of every split of a depth dataset; name each unusable one. Writes a JSON manifest
    (``out``, default runs/data/<name>_depth_manifest.json); exit code 0 = all good, 1 = problems found."""
    from visionlab.cfg import build_config
    from visionlab.data.depth import DepthDataset
    from visionlab.utils.files import atomic_write_json

    from visionlab.data.depth_layouts import parse_depth_spec

    cfg = build_config(task.config_cls, task.name, {"data": spec, "cache": False, "augment": False})
    sources = parse_depth_spec(spec, cfg)  # a bad spec (missing path, bad YAML) is raised as it is
    report: dict[str, Any] = {"data": spec, "splits": {}, "problems": []}
    seen: set[tuple] = set()
    for split in ("train", "val", "test"):
        try:
            with warnings.catch_warnings():  # the skipped files are this report's subject: no extra warning
                warnings.simplefilter("ignore", UserWarning)
                ds = DepthDataset(cfg, split, train=False, sources=sources)
        except DataError as e:
            if "not found" not in str(e):  # an absent split is fine; anything else is a problem
                report["problems"].append(str(e))
            continue
        key = tuple(str(ds.path_of(i)) for i in range(len(ds)))
        if key in seen:  # a folder without splits answers every split with the same files
            continue
        seen.add(key)
        report["splits"][split] = {"images": len(ds), "sources": sorted({ds.source_of(i).name for i in range(len(ds))})}
        report["problems"] += [p for p in ds.skipped if p not in report["problems"]]
    name = Path(spec.split(":", 1)[-1]).stem or "data"
    out = out or Path("runs") / "data" / f"{name}_depth_manifest.json"
    atomic_write_json(out, report)
    for split, info in report["splits"].items():
        console_.print(f"{split}: {info['images']} usable samples ({', '.join(info['sources'])})")
    for problem in report["problems"]:
        console_.print(f"[red]bad[/] {problem}", soft_wrap=True)
    console_.print(f"{len(report['problems'])} problem(s); manifest {out}")
    return 1 if report["problems"] or not report["splits"] else 0
