"""The indoor ray caster against hand-computed hits: depth along the optical axis, faces, normals, shadows."""

from __future__ import annotations

import math

import numpy as np
import pytest

from visionlab.data import raycast as rc

pytestmark = pytest.mark.filterwarnings("error")


def room(**kw) -> rc.World:
    w = rc.World(np.float32([-2, 0, -1]), np.float32([3, 2.5, 5]), (0, 1, 2, 3, 4, 5))
    for i in range(6):
        w.material(rc.Material(np.float32([100, 100, 100]), category=i))
    for k, v in kw.items():
        getattr(w, k).extend(v)
    return w


def centre(world: rc.World, cam, yaw: float = 0.0, pitch: float = 0.0, h: int = 9, w: int = 9):
    dirs = rc.camera_rays(h, w, 10.0, yaw, pitch)
    t, mat, normal, points = rc.cast(world, np.float32(cam), dirs)
    i = (h // 2) * w + w // 2
    return t[i], mat[i], normal[:, i], points[:, i], t.reshape(h, w)


def test_rays_have_unit_optical_axis_component_and_rotate() -> None:
    d = rc.camera_rays(5, 7, 3.0, 0.0, 0.0)
    assert np.allclose(d[2], 1.0) and np.allclose(d[:, 2 * 7 + 3], [0, 0, 1])
    yawed = rc.camera_rays(5, 7, 3.0, math.pi / 2, 0.0)[:, 2 * 7 + 3]
    pitched = rc.camera_rays(5, 7, 3.0, 0.0, math.pi / 2)[:, 2 * 7 + 3]
    assert np.allclose(yawed, [1, 0, 0], atol=1e-6) and np.allclose(pitched, [0, -1, 0], atol=1e-6)  # right; down


def test_room_faces_depth_is_distance_along_the_optical_axis() -> None:
    w = room()
    t, mat, n, _, full = centre(w, [0, 1, 0])
    assert t == pytest.approx(5.0) and mat == 5 and np.allclose(n, [0, 0, -1])
    assert np.allclose(full[3:6, 3:6], 5.0, rtol=1e-5)  # a fronto-parallel wall: one depth for all its pixels
    t, mat, n, _, _ = centre(w, [0, 1, 0], yaw=math.pi / 2)
    assert t == pytest.approx(3.0) and mat == 1 and np.allclose(n, [-1, 0, 0], atol=1e-6)
    t, mat, n, _, _ = centre(w, [0, 1, 0], pitch=math.pi / 2)
    assert t == pytest.approx(1.0) and mat == 2 and np.allclose(n, [0, 1, 0], atol=1e-6)  # the floor below


def test_box_cylinder_sphere_nearest_hit_wins() -> None:
    box = [(-0.5, 0.5, 2.0, 0.5, 1.5, 3.0, 0)]
    t, _, n, p, _ = centre(room(boxes=box), [0, 1, 0])
    assert t == pytest.approx(2.0) and np.allclose(n, [0, 0, -1]) and np.allclose(p, [0, 1, 2])
    sphere = [(0.0, 1.0, 1.5, 0.25, 3)]
    t, mat, n, _, _ = centre(room(boxes=box, spheres=sphere), [0, 1, 0])
    assert t == pytest.approx(1.25) and mat == 3 and np.allclose(n, [0, 0, -1], atol=1e-5)
    cylinder = [(0.0, 1.0, 0.2, 0.0, 1.5, 4)]  # centre z = 1, radius 0.2: front at z = 0.8
    t, mat, n, _, _ = centre(room(boxes=box, cylinders=cylinder), [0, 1, 0])
    assert t == pytest.approx(0.8) and mat == 4 and np.allclose(n, [0, 0, -1], atol=1e-5)
    t, mat, n, _, _ = centre(room(cylinders=[(0.0, 0.0, 0.3, 0.0, 0.5, 4)]), [0, 1, 0], pitch=math.pi / 2)
    assert t == pytest.approx(0.5) and mat == 4 and np.allclose(n, [0, 1, 0])  # top cap seen from above


def test_round_objects_have_curved_depth_and_boxes_planar_faces() -> None:
    _, _, _, _, full = centre(room(spheres=[(0.0, 1.0, 2.0, 0.5, 3)]), [0, 1, 0], h=21, w=21)
    row = full[10, 8:13]
    assert row[2] == row.min() and row[0] > row[2] and np.allclose(row, row[::-1], rtol=1e-5)  # nearest at centre
    _, _, _, _, full = centre(room(boxes=[(-1, 0.5, 2, 1, 1.5, 3, 0)]), [0, 1, 0], h=21, w=21)
    assert np.allclose(full[8:13, 8:13], 2.0)


def test_shadow_rays() -> None:
    w = room(boxes=[(-0.5, 0.9, -0.5, 0.5, 1.0, 0.5, 0)])  # a table top at 1 m
    light = np.float32([0, 2.4, 0])
    points = np.float32([[0, 0, 0], [2, 0, 4], [0, 1.2, 0]]).T  # under the table, far away, above it
    assert rc.shadowed(w, points, light).tolist() == [True, False, False]


def test_textures_are_fixed_to_surfaces() -> None:
    p = np.stack([np.linspace(0, 1, 200, dtype=np.float32), np.zeros(200, np.float32), np.full(200, 2.05, np.float32)])
    up = np.tile(np.float32([[0], [1], [0]]), (1, 200))
    planks = rc.texture(rc.Material(np.float32([1, 1, 1]), "planks", 0.25, seed=1.0), p, up)
    assert np.isclose(planks, 0.55).sum() > 0  # seams between planks
    assert np.array_equal(planks, rc.texture(rc.Material(np.float32([1, 1, 1]), "planks", 0.25, seed=1.0), p, up))
    tiles = rc.texture(rc.Material(np.float32([1, 1, 1]), "tiles", 0.1), p, up)
    assert 8 <= int((np.diff(np.isclose(tiles, 0.7).astype(int)) == 1).sum()) <= 11  # ~one seam per 0.1 m


def test_decals_only_on_their_wall() -> None:
    w = room()
    w.decals.append((5, -0.5, 0.5, 0.5, 1.5, 3))  # a picture on the +Z wall around the centre
    dirs = rc.camera_rays(9, 9, 10.0, 0.0, 0.0)
    _, mat, normal, points = rc.cast(w, np.float32([0, 1, 0]), dirs)
    out = rc.apply_decals(w, mat, points, normal)
    changed = out != mat
    assert out[4 * 9 + 4] == 3 and 0 < changed.sum() < (mat == 5).sum() and (mat[changed] == 5).all()
