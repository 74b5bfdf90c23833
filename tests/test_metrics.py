"""visionlab.metrics.segmentation: IoU / Dice / pixel accuracy from a confusion matrix, and accumulation."""

from __future__ import annotations

import importlib
import math
import sys

import numpy as np
import pytest
import torch

import visionlab.tasks  # noqa: F401  (must come first: see test_metrics_module_imports_on_its_own)
from visionlab.data.categories import CATEGORY_NAMES, IGNORE_INDEX, NUM_CATEGORIES
from visionlab.metrics.segmentation import SegmentationMetrics, scores_from_confusion

CPU = torch.device("cpu")
VOID, FLAT, CONSTR, OBJECT, NATURE, SKY, HUMAN, VEHICLE = range(8)


def hand_cm() -> np.ndarray:
    """cm[true, pred] for 8 categories; sky (5) never occurs in GT nor prediction."""
    cm = np.zeros((8, 8), dtype=np.int64)
    cm[VOID, VOID] = 4
    cm[VOID, FLAT] = 1      # void predicted as flat: FP of flat
    cm[FLAT, FLAT] = 5
    cm[FLAT, CONSTR] = 2    # FN of flat, FP of construction
    cm[CONSTR, CONSTR] = 6
    cm[CONSTR, FLAT] = 2    # FN of construction, FP of flat
    cm[OBJECT, OBJECT] = 3
    cm[OBJECT, NATURE] = 1  # FN of object, FP of nature
    cm[NATURE, NATURE] = 8
    cm[HUMAN, VEHICLE] = 2  # human never predicted correctly: FN of human, FP of vehicle
    cm[VEHICLE, VEHICLE] = 4
    return cm


# Hand computation (IoU = TP/(TP+FP+FN), Dice = 2TP/(2TP+FP+FN)):
#   flat:         TP=5 FP=1+2=3 FN=2 -> IoU 5/10 = 0.5      Dice 10/15 = 2/3
#   construction: TP=6 FP=2     FN=2 -> IoU 6/10 = 0.6      Dice 12/16 = 0.75
#   object:       TP=3 FP=0     FN=1 -> IoU 3/4  = 0.75     Dice 6/7
#   nature:       TP=8 FP=1     FN=0 -> IoU 8/9             Dice 16/17
#   sky:          TP=0 FP=0     FN=0 -> NaN (absent)        NaN
#   human:        TP=0 FP=0     FN=2 -> IoU 0               Dice 0
#   vehicle:      TP=4 FP=2     FN=0 -> IoU 4/6 = 2/3       Dice 8/10 = 0.8
#   void:         TP=4 FP=0     FN=1 -> IoU 0.8, but excluded from the means
#   mIoU  = (1/2 + 3/5 + 3/4 + 8/9 + 0 + 2/3) / 6 = (613/180) / 6 = 613/1080
#   mDice = (2/3 + 3/4 + 6/7 + 16/17 + 0 + 4/5) / 6
#   pixel acc = trace / total = (4+5+6+3+8+0+4) / (5+7+8+4+8+2+4) = 30/38
EXPECTED_IOU = {"flat": 0.5, "construction": 0.6, "object": 0.75, "nature": 8 / 9, "human": 0.0,
                "vehicle": 2 / 3}
EXPECTED_DICE = {"flat": 2 / 3, "construction": 0.75, "object": 6 / 7, "nature": 16 / 17, "human": 0.0,
                 "vehicle": 0.8}


def test_scores_from_hand_confusion():
    s = scores_from_confusion(hand_cm())
    for name, v in EXPECTED_IOU.items():
        assert s[f"iou/{name}"] == pytest.approx(v, abs=1e-12), name
    for name, v in EXPECTED_DICE.items():
        assert s[f"dice/{name}"] == pytest.approx(v, abs=1e-12), name
    assert s["miou"] == pytest.approx(613 / 1080, abs=1e-12)
    assert s["miou"] == pytest.approx(0.5675925925925926, abs=1e-12)
    assert s["mdice"] == pytest.approx((2 / 3 + 0.75 + 6 / 7 + 16 / 17 + 0 + 0.8) / 6, abs=1e-12)
    assert s["pixel_acc"] == pytest.approx(30 / 38, abs=1e-12)


def test_void_excluded_and_absent_category_nan():
    s = scores_from_confusion(hand_cm())
    assert "iou/void" not in s and "dice/void" not in s
    assert math.isnan(s["iou/sky"]) and math.isnan(s["dice/sky"])
    # exactly the 7 non-void categories are reported
    assert sorted(k for k in s if k.startswith("iou/")) == sorted(f"iou/{n}" for n in CATEGORY_NAMES[1:])
    # if void were averaged in (IoU 0.8) or sky counted as 0 or 1, the mean would differ
    assert s["miou"] != pytest.approx((613 / 180 + 0.8) / 7)
    assert s["miou"] != pytest.approx((613 / 180) / 7)
    assert s["miou"] != pytest.approx((613 / 180 + 1) / 7)


def test_void_only_changes_do_not_change_miou_but_change_pixel_acc():
    a = hand_cm()
    b = a.copy()
    b[VOID, VOID] += 100  # more correctly-classified void: no effect on any non-void IoU
    sa, sb = scores_from_confusion(a), scores_from_confusion(b)
    assert sa["miou"] == sb["miou"] and sa["mdice"] == sb["mdice"]
    assert sb["pixel_acc"] == pytest.approx(130 / 138)


def test_all_absent_gives_nan_not_error():
    s = scores_from_confusion(np.zeros((8, 8), dtype=np.int64))
    assert math.isnan(s["miou"]) and math.isnan(s["mdice"]) and math.isnan(s["pixel_acc"])
    only_void = np.zeros((8, 8), dtype=np.int64)
    only_void[VOID, VOID] = 10
    s = scores_from_confusion(only_void)
    assert math.isnan(s["miou"])
    assert s["pixel_acc"] == 1.0


def test_perfect_prediction():
    cm = np.diag([3, 1, 2, 0, 5, 1, 1, 7])  # object (3) absent
    s = scores_from_confusion(cm)
    assert s["miou"] == 1.0 and s["mdice"] == 1.0 and s["pixel_acc"] == 1.0
    assert math.isnan(s["iou/object"])


# ---------------------------------------------------------------- SegmentationMetrics


def logits_for(pred: np.ndarray, num_classes: int = NUM_CATEGORIES) -> torch.Tensor:
    """BxHxW (or HxW) class ids -> logits whose argmax over dim 1 is ``pred``."""
    p = torch.as_tensor(pred, dtype=torch.long)
    if p.ndim == 2:
        p = p[None]
    return torch.nn.functional.one_hot(p, num_classes).permute(0, 3, 1, 2).float() * 5.0 - 1.0


def numpy_cm(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """What SegmentationMetrics must accumulate: ignored and void ground-truth pixels are never scored."""
    cm = np.zeros((NUM_CATEGORIES, NUM_CATEGORIES), dtype=np.int64)
    for target, pred in pairs:
        t, p = np.asarray(target).ravel(), np.asarray(pred).ravel()
        keep = (t != IGNORE_INDEX) & (t != VOID)
        np.add.at(cm, (t[keep], p[keep]), 1)
    return cm


def test_metrics_batched_targets_with_ignore():
    pred = np.array([[[1, 1, 2], [3, 3, 0]],
                     [[7, 7, 7], [5, 5, 5]]])
    target = np.array([[[1, 2, 2], [3, 255, 0]],
                       [[7, 6, 255], [5, 5, 255]]])
    m = SegmentationMetrics(CPU)
    m.update(logits_for(pred), {"target": torch.as_tensor(target)})
    s = m.compute()

    expected = np.zeros((8, 8), dtype=np.int64)
    expected[FLAT, FLAT] = 1
    expected[CONSTR, FLAT] = 1
    expected[CONSTR, CONSTR] = 1
    expected[OBJECT, OBJECT] = 1
    expected[VEHICLE, VEHICLE] = 1
    expected[HUMAN, VEHICLE] = 1
    expected[SKY, SKY] = 2
    np.testing.assert_array_equal(m.last_cm, expected)
    np.testing.assert_array_equal(m.last_cm, numpy_cm([(target, pred)]))
    assert m.last_cm.sum() == 12 - 3 - 1  # the three 255 pixels and the void pixel are not scored
    # flat 1/(1+1) , construction 1/2, object 1, sky 1, human 0, vehicle 1/2, nature absent
    assert s["miou"] == pytest.approx((0.5 + 0.5 + 1 + 1 + 0 + 0.5) / 6)
    assert math.isnan(s["iou/nature"])
    assert s["pixel_acc"] == pytest.approx(6 / 8)  # void (correctly predicted) is not a free hit
    assert m.last is s


def test_metrics_accumulate_over_updates():
    rng = np.random.default_rng(0)
    m = SegmentationMetrics(CPU)
    pairs = []
    for _ in range(3):
        pred = rng.integers(0, 8, (2, 5, 7))
        target = rng.integers(0, 8, (2, 5, 7))
        target[rng.random(target.shape) < 0.2] = IGNORE_INDEX
        m.update(logits_for(pred), {"target": torch.as_tensor(target)})
        pairs.append((target, pred))
    m.compute()
    np.testing.assert_array_equal(m.last_cm, numpy_cm(pairs))
    assert m.last["pixel_acc"] == pytest.approx(np.trace(m.last_cm) / m.last_cm.sum())


def test_metrics_list_of_different_size_targets_upsamples_logits():
    # 2x2 predictions with four distinct classes: bilinear upsampling then argmax equals nearest-neighbour
    pred = np.array([[[1, 2], [3, 4]],
                     [[5, 6], [7, 1]]])
    t0 = np.array([[1, 1, 2, 2],
                   [1, 1, 2, 255],
                   [3, 3, 4, 4],
                   [3, 0, 4, 4]])  # 4x4: 2x upsampling
    t1 = np.full((6, 6), 5)
    t1[:3, 3:] = 6
    t1[3:, :3] = 7
    t1[3:, 3:] = 1
    t1[0, 0] = 2          # wrong: true construction, predicted sky
    t1[5, 5] = IGNORE_INDEX
    m = SegmentationMetrics(CPU)
    m.update(logits_for(pred), {"target": [torch.as_tensor(t0), torch.as_tensor(t1)]})
    m.compute()

    up0 = pred[0].repeat(2, 0).repeat(2, 1)
    up1 = pred[1].repeat(3, 0).repeat(3, 1)
    expected = numpy_cm([(t0, up0), (t1, up1)])
    np.testing.assert_array_equal(m.last_cm, expected)
    # by hand: sample 0 is right; its void pixel (3,1) (predicted object) is not scored; one pixel ignored
    #          sample 1 is right except pixel (0,0) construction->sky; one pixel ignored
    assert expected.sum() == 14 + 35
    assert expected[VOID].sum() == 0 and expected[CONSTR, SKY] == 1
    assert expected[FLAT, FLAT] == 4 + 8 and expected[SKY, SKY] == 8 and expected[HUMAN, HUMAN] == 9
    assert np.trace(expected) == 49 - 1


def test_metrics_batched_tensor_target_larger_than_logits():
    pred = np.array([[[1, 2], [3, 4]], [[4, 3], [2, 1]]])
    target = np.stack([pred[0].repeat(2, 0).repeat(2, 1), pred[1].repeat(2, 0).repeat(2, 1)])
    target[1, 0, 0] = IGNORE_INDEX
    target[0, 3, 3] = 7  # nature pixel labelled vehicle
    m = SegmentationMetrics(CPU)
    m.update(logits_for(pred), {"target": torch.as_tensor(target)})
    m.compute()
    assert m.last_cm.sum() == 31
    assert m.last_cm[VEHICLE, NATURE] == 1
    assert np.trace(m.last_cm) == 30


# ---------------------------------------------------------------- import order


def test_metrics_module_imports_on_its_own():
    """``import visionlab.metrics.segmentation`` in a fresh interpreter (simulated by dropping the visionlab
    task/metrics modules from sys.modules; everything is restored afterwards)."""
    names = [n for n in sys.modules if n == "visionlab.tasks" or n.startswith(("visionlab.tasks.", "visionlab.metrics"))]
    saved = {n: sys.modules.pop(n) for n in names}
    import visionlab

    saved_attrs = {a: getattr(visionlab, a) for a in ("tasks", "metrics") if hasattr(visionlab, a)}
    try:
        mod = importlib.import_module("visionlab.metrics.segmentation")
        assert hasattr(mod, "SegmentationMetrics")
    finally:
        for n in [n for n in sys.modules if n == "visionlab.tasks" or n.startswith(("visionlab.tasks.", "visionlab.metrics"))]:
            del sys.modules[n]
        sys.modules.update(saved)
        for a, v in saved_attrs.items():
            setattr(visionlab, a, v)
