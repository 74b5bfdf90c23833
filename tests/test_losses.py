"""visionlab.losses.segmentation: every loss kind, ignored pixels, ENet class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from visionlab.data.categories import IGNORE_INDEX, NUM_CATEGORIES
from visionlab.losses.segmentation import LOSSES, WEIGHTED_LOSSES, SegmentationLoss, balanced_weights

C = NUM_CATEGORIES


def fixed_example() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, C, 6, 6, generator=g)
    target = torch.randint(0, C, (2, 6, 6), generator=g)
    target[0, :2, :2] = IGNORE_INDEX
    return logits, target


def weights() -> torch.Tensor:
    return balanced_weights(np.arange(1, C + 1, dtype=np.float64) * 100)


def make_loss(kind: str) -> SegmentationLoss:
    return SegmentationLoss(kind, weights() if kind in WEIGHTED_LOSSES else None)


def test_loss_names():
    assert LOSSES == ("ce", "balanced_ce", "dice", "ce_dice", "balanced_ce_dice", "focal", "ce_lovasz", "topk_ce",
                      "topk_ce_dice")


@pytest.mark.parametrize("kind", LOSSES)
def test_loss_finite_and_decreases_under_sgd(kind):
    logits0, target = fixed_example()
    logits = logits0.clone().requires_grad_(True)
    loss_fn = make_loss(kind)
    opt = torch.optim.SGD([logits], lr=100.0)  # per-pixel gradients are ~1/(pixels), hence the large lr
    values = []
    for _ in range(6):
        loss = loss_fn(logits, target)
        assert loss.ndim == 0 and torch.isfinite(loss), (kind, loss)
        values.append(loss.item())
        opt.zero_grad()
        loss.backward()
        assert logits.grad is not None and torch.isfinite(logits.grad).all()
        opt.step()
    assert values[0] > 0
    assert all(b < a for a, b in zip(values, values[1:])), (kind, values)
    assert values[-1] < 0.85 * values[0], (kind, values)


@pytest.mark.parametrize("kind", LOSSES)
def test_ignored_pixels_do_not_contribute(kind):
    """Changing the logits of ignored pixels changes neither the loss nor the other pixels' gradients."""
    logits, target = fixed_example()
    loss_fn = make_loss(kind)
    a = logits.clone().requires_grad_(True)
    b = logits.clone()
    b[0, :, :2, :2] = torch.randn(C, 2, 2, generator=torch.Generator().manual_seed(5)) * 10
    b.requires_grad_(True)
    la, lb = loss_fn(a, target), loss_fn(b, target)
    assert la.item() == pytest.approx(lb.item(), rel=1e-6, abs=1e-7)
    la.backward()
    lb.backward()
    assert torch.count_nonzero(a.grad[0, :, :2, :2]) == 0
    torch.testing.assert_close(a.grad[1], b.grad[1])


def test_ce_matches_torch_cross_entropy():
    logits, target = fixed_example()
    expected = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(SegmentationLoss("ce")(logits, target), expected)


def test_balanced_ce_uses_weights():
    logits, target = fixed_example()
    w = weights()
    expected = torch.nn.functional.cross_entropy(logits, target, weight=w, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(SegmentationLoss("balanced_ce", w)(logits, target), expected)
    assert SegmentationLoss("balanced_ce", w)(logits, target).item() != pytest.approx(
        SegmentationLoss("ce")(logits, target).item())


def test_balanced_ce_dice_is_weighted_ce_plus_dice():
    """Hand-computed: the ENet-weighted CE (weighted mean over valid pixels) + smp's multiclass Dice."""
    logits, target = fixed_example()
    w = weights()
    valid = target != IGNORE_INDEX
    log_p = torch.log_softmax(logits, 1).permute(0, 2, 3, 1)[valid]  # N x C
    t = target[valid]
    ce = -(w[t] * log_p[torch.arange(len(t)), t]).sum() / w[t].sum()
    dice = SegmentationLoss("dice")(logits, target)
    torch.testing.assert_close(SegmentationLoss("balanced_ce_dice", w)(logits, target), ce + dice)
    with pytest.raises(ValueError, match="needs class weights"):
        SegmentationLoss("balanced_ce_dice")


def test_ce_weights_ignored_for_plain_ce():
    logits, target = fixed_example()
    torch.testing.assert_close(SegmentationLoss("ce", weights())(logits, target), SegmentationLoss("ce")(logits, target))


@pytest.mark.parametrize("kind", ["ce", "balanced_ce", "ce_dice", "balanced_ce_dice", "dice"])
def test_all_ignored_target_gives_zero_with_gradient(kind):
    logits = torch.randn(2, C, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    target = torch.full((2, 4, 4), IGNORE_INDEX, dtype=torch.long)
    loss = make_loss(kind)(logits, target)
    assert not torch.isnan(loss)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad) == 0


def test_all_ignored_target_focal_is_not_nan():
    logits = torch.randn(2, C, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    target = torch.full((2, 4, 4), IGNORE_INDEX, dtype=torch.long)
    loss = make_loss("focal")(logits, target)
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_half_precision_logits_are_upcast():
    logits, target = fixed_example()
    loss = SegmentationLoss("ce")(logits.to(torch.bfloat16), target)
    assert loss.dtype == torch.float32


# ---------------------------------------------------------------- balanced_weights


def test_balanced_weights_hand_computed():
    # counts 600/300/100/0 -> f = 0.6, 0.3, 0.1, 0.0
    # w = 1/ln(1.62) = 2.0728561, 1/ln(1.32) = 3.6018937, 1/ln(1.12) = 8.8238913, 1/ln(1.02) = 50.4983498
    # mean = 16.2492477 -> normalised 0.1275663, 0.2216653, 0.5430338, 3.1077346
    w = balanced_weights(np.array([600, 300, 100, 0]))
    assert w.dtype == torch.float32 and w.shape == (4,)
    np.testing.assert_allclose(w.numpy(), [0.1275663, 0.2216653, 0.5430338, 3.1077346], atol=1e-6)
    raw = [1 / math.log(1.02 + f) for f in (0.6, 0.3, 0.1, 0.0)]
    np.testing.assert_allclose(w.numpy(), np.array(raw) / np.mean(raw), rtol=1e-6)
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)


def test_balanced_weights_with_ignore_hand_computed():
    # ignored class 0 (no pixels); f = 0, 0.6, 0.3, 0.1 -> raw 2.0728561, 3.6018937, 8.8238913 for classes 1..3
    # mean over the non-ignored = 4.8328804 -> 0.4289070, 0.7452892, 1.8258038
    w = balanced_weights(np.array([0, 600, 300, 100]), ignore=[0])
    np.testing.assert_allclose(w.numpy(), [0.0, 0.4289070, 0.7452892, 1.8258038], atol=1e-6)
    assert w[1:].mean().item() == pytest.approx(1.0, abs=1e-6)


def test_balanced_weights_rarer_gets_larger_and_ignore_is_zero():
    counts = np.array([5000, 4000, 2000, 1000, 500, 100, 10, 1], dtype=np.float64)
    w = balanced_weights(counts, ignore=[0]).numpy()
    assert w[0] == 0.0
    assert all(w[i] < w[i + 1] for i in range(1, 7)), w
    assert w[1:].mean() == pytest.approx(1.0, abs=1e-6)
    # frequencies are shares of all counted pixels (the ignored category included): ratio rarest / most common
    f = counts / counts.sum()
    assert w[7] / w[1] == pytest.approx(math.log(1.02 + f[1]) / math.log(1.02 + f[7]), rel=1e-6)


def test_balanced_weights_scale_invariant():
    a = balanced_weights(np.array([3, 1, 1, 0]))
    b = balanced_weights(np.array([3000, 1000, 1000, 0]))
    torch.testing.assert_close(a, b)


def test_balanced_weights_all_zero_counts_is_uniform():
    w = balanced_weights(np.zeros(4))
    torch.testing.assert_close(w, torch.ones(4))


# ---------------------------------------------------------------- bad arguments


def test_balanced_ce_without_weights_raises():
    with pytest.raises(ValueError, match="balanced_ce"):
        SegmentationLoss("balanced_ce")


def test_unknown_loss_raises():
    with pytest.raises(ValueError, match="loss 'xyz' is not one of ce, balanced_ce, dice, ce_dice, balanced_ce_dice, focal"):
        SegmentationLoss("xyz")


def test_topk_ce_is_the_mean_of_the_hardest_pixels_hand_computed():
    from visionlab.losses.segmentation import topk_cross_entropy

    # 1 image, 2 classes, 4 pixels (one ignored): per-pixel CE = log(1 + e^-margin) for margins 2, 0, -1
    logits = torch.tensor([[[[2.0, 0.0, -1.0, 5.0]], [[0.0, 0.0, 0.0, 0.0]]]])  # [1, 2, 1, 4]
    target = torch.tensor([[[0, 0, 0, IGNORE_INDEX]]])
    ce = [math.log1p(math.exp(-m)) for m in (2.0, 0.0, -1.0)]
    assert topk_cross_entropy(logits, target, 1 / 3).item() == pytest.approx(max(ce), rel=1e-6)
    assert topk_cross_entropy(logits, target, 2 / 3).item() == pytest.approx((ce[1] + ce[2]) / 2, rel=1e-6)
    assert topk_cross_entropy(logits, target, 1.0).item() == pytest.approx(sum(ce) / 3, rel=1e-6)


def test_ce_lovasz_is_ce_plus_smp_lovasz():
    from segmentation_models_pytorch.losses import LovaszLoss

    logits, target = fixed_example()
    lovasz = LovaszLoss(mode="multiclass", per_image=False, ignore_index=IGNORE_INDEX)(logits, target)
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    assert make_loss("ce_lovasz")(logits, target).item() == pytest.approx((ce + lovasz).item(), rel=1e-6)


def test_lovasz_is_zero_for_a_perfect_prediction():
    target = torch.randint(0, C, (2, 5, 5), generator=torch.Generator().manual_seed(1))
    logits = torch.nn.functional.one_hot(target, C).permute(0, 3, 1, 2).float() * 50
    assert make_loss("ce_lovasz")(logits, target).item() == pytest.approx(0.0, abs=1e-4)


def test_topk_ce_dice_is_topk_ce_plus_smp_dice():
    from segmentation_models_pytorch.losses import DiceLoss

    from visionlab.losses.segmentation import TOPK_SHARE, topk_cross_entropy

    logits, target = fixed_example()
    dice = DiceLoss(mode="multiclass", ignore_index=IGNORE_INDEX)(logits, target)
    expected = topk_cross_entropy(logits, target, TOPK_SHARE) + dice
    assert make_loss("topk_ce_dice")(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
