"""Procedural street scenes: determinism, geometry of the depth map, category statistics."""

from __future__ import annotations

import numpy as np
import pytest

from visionlab.data.categories import CATEGORY_NAMES
from visionlab.data.synthetic import SKY_DEPTH, Scene, render_scene

FLAT, CONSTRUCTION, OBJECT, HUMAN, SKY, VEHICLE = (
    CATEGORY_NAMES.index(n) for n in ("flat", "construction", "object", "human", "sky", "vehicle"))
SEEDS = range(30)
pytestmark = pytest.mark.filterwarnings("error")  # e.g. NaN/inf arithmetic in the renderer


@pytest.fixture(scope="module")
def scenes() -> list[Scene]:
    return [render_scene(s, 128, 256) for s in SEEDS]


def test_deterministic() -> None:
    a, b = render_scene(7, 96, 160), render_scene(7, 96, 160)
    for field in ("image", "mask", "depth"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    c = render_scene(8, 96, 160)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.mask, c.mask)


@pytest.mark.parametrize("size", [(32, 32), (128, 128), (96, 160), (360, 480), (200, 64)])
def test_shapes_and_dtypes(size: tuple[int, int]) -> None:
    h, w = size
    s = render_scene(3, h, w)
    assert s.image.shape == (h, w, 3) and s.image.dtype == np.uint8
    assert s.mask.shape == (h, w) and s.mask.dtype == np.uint8
    assert s.depth.shape == (h, w) and s.depth.dtype == np.float32
    assert s.mask.max() < len(CATEGORY_NAMES)
    assert np.isfinite(s.depth).all() and (s.depth > 0).all()


def test_default_size_and_too_small() -> None:
    assert render_scene(0).image.shape == (256, 512, 3)
    with pytest.raises(ValueError):
        render_scene(0, 16, 64)


def test_sky_depth_and_image_range(scenes: list[Scene]) -> None:
    for s in scenes:
        sky = s.mask == SKY
        assert np.all(s.depth[sky] == SKY_DEPTH)
        assert np.all(s.depth[~sky] < SKY_DEPTH)  # everything else is a real surface
        assert s.image.std() > 10  # not a blank frame


def test_ground_is_a_plane(scenes: list[Scene]) -> None:
    """Flat pixels: one depth per row, growing towards the horizon, and z * (y - horizon) constant."""
    for s in scenes:
        rows = [y for y in range(s.mask.shape[0]) if (s.mask[y] == FLAT).sum() >= 4]
        d = np.array([np.median(s.depth[y][s.mask[y] == FLAT]) for y in rows])
        spread = np.array([np.ptp(s.depth[y][s.mask[y] == FLAT]) for y in rows])
        assert np.all(spread <= 1e-3 * d)  # the ground is level: depth depends on the row only
        n = max(len(rows) // 10, 1)
        assert np.median(d[-n:]) < np.median(d[:n])  # bottom rows nearer than rows near the horizon
        assert np.all(np.diff(d) <= 0)
        # pinhole ground plane: 1/z is linear in the row (1/z = (y + 0.5 - hz) / (f cam_h))
        ys, inv = np.array(rows, float)[d < 300], 1 / d[d < 300]
        fit = np.polyfit(ys, inv, 1)
        assert fit[0] > 0 and np.abs(np.polyval(fit, ys) - inv).max() < 1e-3 * inv.max()


def test_categories_present(scenes: list[Scene]) -> None:
    present = np.array([[np.any(s.mask == k) for k in range(1, len(CATEGORY_NAMES))] for s in scenes])
    rate = present.mean(0)
    assert np.all(rate >= 0.7), dict(zip(CATEGORY_NAMES[1:], rate.round(2)))


def test_category_fractions(scenes: list[Scene]) -> None:
    frac = np.mean([np.bincount(s.mask.ravel(), minlength=len(CATEGORY_NAMES)) / s.mask.size for s in scenes], 0)
    assert 0 < frac[HUMAN] < 0.15 and 0 < frac[OBJECT] < 0.15
    for big in (FLAT, CONSTRUCTION):
        assert frac[big] > 0.15
    assert frac[SKY] > 0.02 and frac[VEHICLE] > 0.02
    assert frac[0] < 0.01  # void is not used


def test_occluders_are_nearer(scenes: list[Scene]) -> None:
    """Where a vehicle or person's top edge meets a building, the building is behind it (z-buffer)."""
    nearer = total = 0
    for s in scenes:
        for cat in (VEHICLE, HUMAN):
            edge = (s.mask[1:] == cat) & (s.mask[:-1] == CONSTRUCTION)
            nearer += int((s.depth[1:][edge] < s.depth[:-1][edge]).sum())
            total += int(edge.sum())
        v = s.depth[s.mask == VEHICLE]
        if v.size:
            assert 0 < np.median(v) < SKY_DEPTH
    assert total > 100 and nearer / total > 0.97


def test_layout_scales_with_size() -> None:
    """Sizes are metric: the same seed at twice the resolution is the same scene."""
    for seed in (1, 2):
        big, small = render_scene(seed, 128, 256).mask[1::2, 1::2], render_scene(seed, 64, 128).mask
        assert (big == small).mean() > 0.85


def test_zbuffer_keeps_the_nearest_surface() -> None:
    from visionlab.data.synthetic import _Canvas
    from visionlab.data.synthetic_base import Rand

    rng = np.random.default_rng(0)
    c = _Canvas(rng, Rand(rng), 64, 64)
    sl, lab = (slice(10, 20), slice(10, 20)), np.ones((10, 10), np.uint8)
    c.paint(sl, 5.0, lab, [(255, 0, 0)], VEHICLE)
    c.paint(sl, 9.0, lab, [(0, 255, 0)], HUMAN)  # farther: hidden
    assert (c.mask[sl] == VEHICLE).all() and (c.depth[sl] == 5.0).all() and (c.img[1:, sl[0], sl[1]] == 0).all()
    half = np.zeros((10, 10), np.uint8)
    half[:, :5] = 1
    c.paint(sl, np.full((1, 10), 2.0, np.float32), half, [(0, 0, 255)], HUMAN)  # nearer: drawn where labelled
    assert (c.mask[10:20, 10:15] == HUMAN).all() and (c.mask[10:20, 15:20] == VEHICLE).all()
    assert (c.depth[10:20, 10:15] == 2.0).all()
