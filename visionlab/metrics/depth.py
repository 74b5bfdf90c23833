"""Monocular depth metrics: AbsRel, SqRel, RMSE, RMSE-log, log10, δ1..δ3, with alignment and eval crops.

Every metric is computed **per image** (on that image's valid pixels, in depth units) and then **averaged
over images** (each image weighs the same, whatever its valid-pixel count), as in the Depth Anything /
Marigold evaluation code; 95% confidence intervals come from a seeded bootstrap over images.

Predictions are relative inverse depth (disparity) Bx1xhxw. Each is upsampled to its target's native size
(bilinear, align_corners=False), aligned (``align``), turned into depth = 1 / disparity, clamped to the
evaluation depth range, and compared with the ground truth depth (disparity ground truth, space=1, is
converted to depth = 1 / disparity first). Alignment modes:

- ``lsq_disparity``: least-squares scale + shift in disparity space (relative models; MiDaS protocol);
- ``lsq_depth``: least-squares scale + shift of the predicted depth (1 / output) in depth space;
- ``median``: predicted depth scaled by median(gt) / median(pred) (metric models evaluated up to scale);
- ``none``: 1 / output taken as metric depth.

Predicted depth is clamped to [min_depth, max_depth] from the batch's optional "min_depth"/"max_depth"
(NaN = not set; the usual 1e-3..10 m NYU / 80 m KITTI caps). Without a max_depth, ``lsq_disparity`` still
needs a floor for aligned disparities <= 0: it caps depth at the image's farthest valid ground truth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from visionlab.losses.depth import fit_scale_shift
from visionlab.metrics.base import Metrics

ALIGN_MODES = ("lsq_disparity", "lsq_depth", "median", "none")
METRIC_KEYS = ("absrel", "sqrel", "rmse", "rmse_log", "log10", "delta1", "delta2", "delta3")
LOWER_IS_BETTER = {"absrel": True, "sqrel": True, "rmse": True, "rmse_log": True, "log10": True,
                   "delta1": False, "delta2": False, "delta3": False}
EVAL_CROPS = ("eigen", "garg")
_BOOTSTRAP_RESAMPLES, _BOOTSTRAP_SEED = 1000, 0


def eval_crop_mask(height: int, width: int, kind: str | None) -> np.ndarray:
    """bool HxW mask of the standard evaluation crop (True = evaluated).

    ``eigen``: NYU rows 45:471, cols 41:601 on 480x640 (scaled proportionally for other sizes);
    ``garg``: KITTI rows 0.40810811 H : 0.99189189 H, cols 0.03594771 W : 0.96405229 W (int-truncated,
    as in the Monodepth/BTS code); None or "none": everything."""
    mask = np.zeros((height, width), dtype=bool)
    if kind is None or kind == "none":
        mask[:] = True
    elif kind == "eigen":
        r0, r1 = round(45 * height / 480), round(471 * height / 480)
        c0, c1 = round(41 * width / 640), round(601 * width / 640)
        mask[r0:r1, c0:c1] = True
    elif kind == "garg":
        r0, r1, c0, c1 = (np.array([0.40810811 * height, 0.99189189 * height,
                                    0.03594771 * width, 0.96405229 * width])).astype(np.int32)
        mask[r0:r1, c0:c1] = True
    else:
        raise ValueError(f"eval_crop '{kind}' is not one of eigen, garg, none")
    return mask


def depth_errors(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
    """All metrics on 1-D tensors of matching predicted / ground-truth depths (both > 0)."""
    pred, gt = pred.double(), gt.double()
    ratio = torch.maximum(pred / gt, gt / pred)
    diff = pred - gt
    return {
        "absrel": float((diff.abs() / gt).mean()),
        "sqrel": float((diff**2 / gt).mean()),
        "rmse": float(torch.sqrt((diff**2).mean())),
        "rmse_log": float(torch.sqrt(((torch.log(pred) - torch.log(gt)) ** 2).mean())),
        "log10": float((torch.log10(pred) - torch.log10(gt)).abs().mean()),
        "delta1": float((ratio < 1.25).double().mean()),
        "delta2": float((ratio < 1.25**2).double().mean()),
        "delta3": float((ratio < 1.25**3).double().mean()),
    }


def align_prediction(pred_disp: torch.Tensor, gt_depth: torch.Tensor, mode: str,
                     depth_range: tuple[float | None, float | None] = (None, None)) -> torch.Tensor:
    """1-D predicted disparity + 1-D ground-truth depth (valid pixels only) -> predicted depth, aligned
    by ``mode`` and clamped to ``depth_range`` = (lo, hi) (None = open end)."""
    lo, hi = depth_range
    pred_disp = pred_disp.double()
    gt_depth = gt_depth.double()
    ones = torch.ones(1, dtype=torch.bool, device=pred_disp.device).expand_as(pred_disp)
    if mode == "lsq_disparity":
        s, t = fit_scale_shift(pred_disp[None], 1.0 / gt_depth[None], ones[None])
        disp = s[0] * pred_disp + t[0]
        cap = hi if hi is not None else float(gt_depth.max())
        depth = 1.0 / disp.clamp(min=1.0 / cap)  # disparity <= 0 (beyond infinity) -> the depth cap
    else:
        depth = 1.0 / pred_disp.clamp(min=1e-12)
        if mode == "lsq_depth":
            s, t = fit_scale_shift(depth[None], gt_depth[None], ones[None])
            depth = s[0] * depth + t[0]
        elif mode == "median":
            depth = depth * (gt_depth.median() / depth.median().clamp(min=1e-12))
        elif mode != "none":
            raise ValueError(f"align '{mode}' is not one of {', '.join(ALIGN_MODES)}")
    return depth.clamp(min=lo if lo is not None else 1e-12, max=hi)


def _finite(value: Any) -> float | None:
    """A positive finite float, or None (NaN / None / inf = not set)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


def _as_list(x: Any, n: int) -> list:
    if x is None:
        return [None] * n
    if isinstance(x, torch.Tensor):
        return x.reshape(-1).tolist() if x.dim() <= 1 else list(x)
    return list(x)


class DepthMetrics(Metrics):
    """Per-image depth metrics over an evaluation pass; ``compute()`` returns image means, bootstrap 95%
    CIs (``<key>_ci_low`` / ``<key>_ci_high``), the image count and per-source ``<source>/absrel`` /
    ``<source>/delta1``. Per-image records stay in ``self.records`` (best/worst grids, see ``extremes``)."""

    fitness_key = "absrel"  # lower is better

    def __init__(self, device: torch.device | str = "cpu", align: str = "lsq_disparity", sync: bool = True):
        if align not in ALIGN_MODES:
            raise ValueError(f"align '{align}' is not one of {', '.join(ALIGN_MODES)}")
        self.device, self.align, self.sync = torch.device(device), align, sync
        self.records: list[dict[str, Any]] = []
        self.empty_images = 0  # images without a single valid ground-truth pixel (not scored)
        self.last: dict[str, float] = {}

    def reset(self) -> None:
        self.records, self.empty_images, self.last = [], 0, {}

    def update(self, outputs: torch.Tensor, batch: dict[str, Any]) -> None:
        targets, valids = batch["target"], batch["valid"]
        n = outputs.shape[0]
        space = batch.get("space", 0)
        spaces = [space] * n if isinstance(space, int) else _as_list(space, n)
        sources = _as_list(batch.get("source"), n)
        indices = _as_list(batch.get("index"), n)
        names = _as_list(batch.get("name"), n)
        lows, highs = _as_list(batch.get("min_depth"), n), _as_list(batch.get("max_depth"), n)
        outputs = outputs.detach().float()
        for i in range(n):
            target = targets[i].to(outputs.device).float().reshape(targets[i].shape[-2:])
            valid = valids[i].to(outputs.device).bool().reshape(target.shape)
            pred = outputs[i : i + 1]
            if pred.shape[-2:] != target.shape:
                pred = F.interpolate(pred, size=target.shape, mode="bilinear", align_corners=False)
            pred = pred.reshape(target.shape)
            good = valid & torch.isfinite(target) & (target > 0) & torch.isfinite(pred)
            if not good.any():
                self.empty_images += 1
                continue
            gt = target[good].double()
            if int(spaces[i]) == 1:
                gt = 1.0 / gt
            depth = align_prediction(pred[good], gt, self.align, (_finite(lows[i]), _finite(highs[i])))
            record: dict[str, Any] = {
                "index": int(indices[i]) if indices[i] is not None else len(self.records),
                "name": names[i],
                "source": sources[i] if sources[i] is not None else "all",
                "pixels": int(good.sum()),
            }
            record.update(depth_errors(depth, gt))
            self.records.append(record)

    def _all_records(self) -> list[dict[str, Any]]:
        import torch.distributed as dist

        if self.sync and dist.is_available() and dist.is_initialized():
            from visionlab.engine.distributed import gather_objects

            return [r for part in gather_objects(self.records) for r in part]
        return list(self.records)

    def compute(self) -> dict[str, float]:
        records = self._all_records()
        out: dict[str, float] = {"images": float(len(records))}
        if not records:
            for key in METRIC_KEYS:
                out[key] = out[f"{key}_ci_low"] = out[f"{key}_ci_high"] = float("nan")
            self.last = out
            return out
        values = np.array([[r[k] for k in METRIC_KEYS] for r in records], dtype=np.float64)  # images x metrics
        means = values.mean(0)
        rng = np.random.default_rng(_BOOTSTRAP_SEED)
        resampled = values[rng.integers(0, len(values), size=(_BOOTSTRAP_RESAMPLES, len(values)))].mean(1)
        low, high = np.percentile(resampled, [2.5, 97.5], axis=0)
        for j, key in enumerate(METRIC_KEYS):
            out[key] = float(means[j])
            out[f"{key}_ci_low"], out[f"{key}_ci_high"] = float(low[j]), float(high[j])
        sources = sorted({str(r["source"]) for r in records})
        for source in sources:
            rows = [r for r in records if str(r["source"]) == source]
            out[f"{source}/absrel"] = float(np.mean([r["absrel"] for r in rows]))
            out[f"{source}/delta1"] = float(np.mean([r["delta1"] for r in rows]))
            out[f"{source}/images"] = float(len(rows))
        self.all_records = records
        self.last = out
        return out

    def extremes(self, k: int = 4) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(best k, worst k) per-image records by AbsRel, for best/worst prediction grids."""
        records = sorted(getattr(self, "all_records", self.records), key=lambda r: r["absrel"])
        return records[:k], records[::-1][:k]

    def report(self, console: Any) -> None:
        from rich.table import Table

        if not self.last:
            return
        table = Table(title=f"depth metrics ({int(self.last['images'])} images, mean over images, align={self.align})")
        for col in ("metric", "mean", "95% CI", "better"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for key in METRIC_KEYS:
            table.add_row(key, f"{self.last[key]:.4f}",
                          f"{self.last[f'{key}_ci_low']:.4f} - {self.last[f'{key}_ci_high']:.4f}",
                          "lower" if LOWER_IS_BETTER[key] else "higher")
        console.print(table)
        sources = sorted(k[: -len("/absrel")] for k in self.last if k.endswith("/absrel"))
        if len(sources) > 1:
            per = Table(title="per source")
            for col in ("source", "images", "absrel", "delta1"):
                per.add_column(col, justify="left" if col == "source" else "right")
            for s in sources:
                per.add_row(s, str(int(self.last[f"{s}/images"])), f"{self.last[f'{s}/absrel']:.4f}",
                            f"{self.last[f'{s}/delta1']:.4f}")
            console.print(per)
        if self.empty_images:
            console.print(f"{self.empty_images} image(s) had no valid ground-truth pixel and were not scored")
