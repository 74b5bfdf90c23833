"""Procedural indoor scenes with exact metric depth, deterministic from a seed: rooms with furniture, objects
on tables and tabletop close-ups, the indoor counterpart of ``synthetic.render_scene`` for the depth task.

Why: the street scenes alone teach a depth model that "lower in the image = nearer, sky far away"; real depth
frames (NYU, TUM, Middlebury) are rooms and close-ups with walls, furniture and curved objects. Same camera
model and z-buffered canvas as the streets (a pinhole camera at height cam_h looks along +Z; pitch moves the
horizon row), but focal length, camera height and pitch vary much more, as in hand-held indoor shots.
Surfaces: horizontal rectangles (floor, ceiling, table and cabinet tops), fronto-parallel faces (back wall,
fronts), side planes (side walls and box sides), and curved cylinders / spheres with per-pixel depth.
"""

from __future__ import annotations

import math

import numpy as np

from visionlab.data.synthetic import (CONSTRUCTION, FLAT, Scene, _Canvas, _finish, _labels, _pal, _person,
                                      _Rand)

_GOLDEN = 0.6180339887498949
VOID = 0  # furniture and small objects have no street category
_WALL = _pal(235, 232, 225, 220, 215, 200, 200, 205, 210, 225, 210, 185, 190, 200, 185, 240, 225, 215,
             170, 180, 190, 210, 190, 170)
_FLOOR = _pal(150, 105, 65, 185, 145, 100, 120, 80, 50, 200, 195, 185, 120, 120, 125, 90, 95, 110, 160, 150, 130)
_WOOD = _pal(160, 115, 70, 120, 80, 45, 200, 170, 130, 90, 60, 40, 230, 225, 215, 40, 40, 42, 150, 150, 155)
_FABRIC = _pal(70, 80, 120, 120, 60, 60, 90, 110, 80, 180, 170, 150, 60, 60, 65, 200, 140, 90, 130, 100, 140)
_THINGS = _pal(220, 60, 50, 40, 120, 200, 240, 200, 60, 60, 160, 80, 245, 245, 240, 30, 30, 35, 200, 120, 40,
               150, 80, 160, 90, 200, 200, 230, 150, 170)


def _flat(c: _Canvas, hgt: float, x0: float, x1: float, z0: float, z1: float):
    """Window of the horizontal rectangle at height hgt: (slice, Z per row (h,1), inside (h,w)) or None."""
    dh = c.cam_h - hgt  # > 0: seen from above (below the horizon row), < 0: from below (ceilings)
    z0 = max(z0, 0.05)
    if abs(dh) < 1e-3 or z1 <= z0:
        return None
    ys = [c.hz + c.f * dh / z for z in (z0, z1)]
    cols = [c.cx + c.f * x / z for x in (x0, x1) for z in (z0, z1)]
    r0, r1 = max(math.floor(min(ys)), 0), min(math.ceil(max(ys)) + 1, c.h)
    q0, q1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)) + 1, c.w)
    if r0 >= r1 or q0 >= q1:
        return None
    yy = np.arange(r0, r1, dtype=np.float32)[:, None] + (0.5 - c.hz)
    with np.errstate(divide="ignore"):
        z = np.where(yy * dh > 0, c.f * dh / yy, np.inf).astype(np.float32)
    x = (np.arange(q0, q1, dtype=np.float32)[None] + (0.5 - c.cx)) / c.f * z
    inside = (z >= z0) & (z <= z1) & (x >= x0) & (x <= x1)
    return (slice(r0, r1), slice(q0, q1)), np.minimum(z, 1e4), x, inside


def _box(c: _Canvas, r: _Rand, x: float, z: float, w: float, d: float, hgt: float, col, base: float = 0.0,
         kind: str = "cabinet") -> None:
    """Axis-aligned box standing at height ``base``: top (when below the eye), front and the visible side."""
    x0, x1 = x - w / 2, x + w / 2
    got = _flat(c, base + hgt, x0, x1, z, z + d) if base + hgt < c.cam_h else None
    if got:
        sl, zz, _, inside = got
        c.paint(sl, zz, inside.view(np.uint8), [col * 1.08], VOID, 1.0)
    got = c.fp(z, x0, x1, base, base + hgt)
    if got:
        sl, u, v = got
        v = v - base
        regions = [np.ones(np.broadcast_shapes(u.shape, v.shape), bool)]
        if kind == "cabinet" and v.shape[0] > 8:  # doors / drawers: dark seams
            n = max(1, round(w / 0.5))
            regions.append((((u - x0) % (w / n)) < 0.015) | ((v % max(hgt / 3, 0.2)) < 0.015))
        elif kind == "shelf" and v.shape[0] > 8:  # open shelves: dark backs between boards
            regions.append(((v % 0.35) > 0.03) & (np.abs(u - x) < w / 2 - 0.03) & (v > 0.05) & (v < hgt - 0.03))
        elif kind == "sofa" and v.shape[0] > 8:  # seat cushion line
            regions.append(np.abs(v - 0.45 * hgt) < 0.02)
        c.paint(sl, np.float32(z), _labels(regions[0].shape, *regions), [col, col * 0.45], VOID, 0.95)
    xs = x0 if x0 > 0.02 else (x1 if x1 < -0.02 else None)  # the side facing the camera, if any
    got = c.side(xs, z, z + d, base, base + hgt) if xs is not None else None
    if got:
        sl, zz, v = got
        inside = (zz >= z) & (zz <= z + d) & (v >= base) & (v <= base + hgt)
        c.paint(sl, zz, inside.view(np.uint8), [col], VOID, 0.75)


def _table(c: _Canvas, r: _Rand, x: float, z: float, w: float, d: float, hgt: float, col) -> None:
    """Table top slab on four legs, with a few things on it."""
    _things(c, r, x, z, w, d, hgt)
    _box(c, r, x, z, w, d, 0.04, col, base=hgt - 0.04, kind="slab")
    leg = 0.05
    for lx in (x - w / 2 + leg, x + w / 2 - leg):
        for lz in (z + leg, z + d - leg):
            got = c.fp(lz, lx - leg / 2, lx + leg / 2, 0, hgt - 0.04)
            if got:
                sl, u, v = got
                c.paint(sl, np.float32(lz), np.ones((v.shape[0], u.shape[1]), np.uint8), [col * 0.8], VOID, 0.9)


def _things(c: _Canvas, r: _Rand, x: float, z: float, w: float, d: float, base: float) -> None:
    """Cups, bottles, fruit and books on a surface at height ``base``: curved depth where they are round."""
    for _ in range(r.int(1, 7)):
        tx, tz, col = x + r.u(-0.42, 0.42) * w, z + r.u(0.1, 0.9) * d, r.pick(_THINGS, 0.7, 1.1)
        k = r.u()
        if k < 0.35:  # cylinder (cup, bottle, vase): depth = front of the circle per column
            rad, hgt = r.u(0.03, 0.09), r.u(0.08, 0.35)
            got = c.fp(tz - rad, tx - rad, tx + rad, base, base + hgt)
            if got:
                sl, u, v = got
                du = np.clip((u - tx) / rad, -1, 1)
                depth = np.broadcast_to(tz - rad * np.sqrt(1 - du**2), (v.shape[0], u.shape[1]))
                inside = (np.abs(u - tx) <= rad) & (v >= base) & (v <= base + hgt)
                c.paint(sl, depth, inside.view(np.uint8), [col], VOID, 0.85 + 0.25 * float(r.u()))
        elif k < 0.6:  # sphere (fruit, ball)
            rad = r.u(0.03, 0.12)
            got = c.fp(tz - rad, tx - rad, tx + rad, base, base + 2 * rad)
            if got:
                sl, u, v = got
                q = 1 - ((u - tx) ** 2 + (v - base - rad) ** 2) / rad**2
                depth = tz - rad * np.sqrt(np.maximum(q, 0))
                c.paint(sl, depth.astype(np.float32), (q > 0).view(np.uint8), [col], VOID, 1.0)
        else:  # box (books, a box, a laptop)
            _box(c, r, tx, tz, r.u(0.1, 0.4), r.u(0.1, 0.3), r.u(0.02, 0.25), col, base=base, kind="slab")


def _room_surfaces(c: _Canvas, r: _Rand, xl: float, xr: float, depth: float, hgt: float) -> None:
    """Floor (planks, tiles or carpet), ceiling, back wall with a window / door / pictures, side walls."""
    wall, floor = r.pick(_WALL, 0.8, 1.05), r.pick(_FLOOR, 0.8, 1.1)
    got = _flat(c, 0.0, xl, xr, 0.05, depth)
    if got:
        sl, z, x, inside = got
        style, period = r.int(0, 3), r.u(0.12, 0.6)
        seams = np.zeros_like(inside)  # style 2: carpet
        if style < 2:  # 0: planks along Z, 1: square tiles
            seams = seams | (np.abs(((x if style == 0 else z) / period) % 1 - 0.5) > 0.47)
        if style == 1:
            seams = seams | (np.abs((x / period) % 1 - 0.5) > 0.47)
        c.paint(sl, z, _labels(inside.shape, inside, inside & seams), [floor, floor * 0.6], FLAT, 1.0)
    got = _flat(c, hgt, xl, xr, 0.05, depth)
    if got:
        sl, z, _, inside = got
        c.paint(sl, z, inside.view(np.uint8), [np.float32([240, 240, 236]) * r.u(0.8, 1.0)], CONSTRUCTION, 0.9)
    got = c.fp(depth, xl, xr, 0, hgt)
    if got:
        sl, u, v = got
        base = np.ones((v.shape[0], u.shape[1]), bool)
        regions, cols = [base], [wall]
        if r.u() < 0.5:  # window: bright pane with frame bars
            wx, ww = r.u(xl + 0.5, max(xr - 1.5, xl + 0.6)), r.u(0.8, 2.0)
            pane = (u >= wx) & (u <= wx + ww) & (v >= 0.9) & (v <= min(hgt - 0.3, 2.3))
            regions += [pane, pane & ((np.abs(u - wx - ww / 2) < 0.03) | (np.abs(v - 1.6) < 0.03))]
            cols += [np.float32([215, 230, 245]) * r.u(0.85, 1.1), (245, 245, 240)]
        for _ in range(r.int(0, 3)):  # pictures and a door
            px, pw, ph = r.u(xl, xr), r.u(0.3, 1.0), r.u(0.3, 2.0)
            pv = 0.0 if ph > 1.7 else r.u(1.0, 1.6)
            regions.append((u >= px) & (u <= px + pw) & (v >= pv) & (v <= pv + ph))
            cols.append(r.pick(_WOOD if ph > 1.7 else _THINGS, 0.6, 1.0))
        c.paint(sl, np.float32(depth), _labels(base.shape, *regions), cols, CONSTRUCTION, 0.95)
    for xw, shade in ((xl, 0.8), (xr, 0.9)):
        got = c.side(xw, 0.05, depth, 0, hgt)
        if got:
            sl, z, v = got
            inside = (z <= depth) & (v >= 0) & (v <= hgt)
            c.paint(sl, z, inside.view(np.uint8), [wall], CONSTRUCTION, shade)


def _camera(c: _Canvas, r: _Rand, closeup: bool) -> None:
    """Indoor camera: wide to normal lenses, eye or table height, often looking down."""
    c.f = c.w * r.u(0.55, 1.25)
    c.cam_h = r.u(0.9, 1.3) if closeup else r.u(0.9, 1.8)
    pitch = math.radians(r.u(15, 40) if closeup else r.u(-5, 25))
    c.hz = float(np.clip(c.h / 2 - c.f * math.tan(pitch), -0.6 * c.h, 0.75 * c.h))


def is_room(seed: int, share: float) -> bool:
    """Whether synthetic scene ``seed`` is a room when a ``share`` of the scenes are rooms: a golden-ratio
    sequence, so any run of consecutive seeds holds that share (an exact split, whatever its size)."""
    return (seed * _GOLDEN) % 1.0 < share


def render_room(seed: int, height: int = 256, width: int = 512) -> Scene:
    """Render one random indoor scene; the same (seed, height, width) gives bit-identical output."""
    if height < 32 or width < 32:
        raise ValueError(f"render_room needs height, width >= 32, got {height}x{width}")
    rng = np.random.default_rng(seed)
    r, arrays = _Rand(rng), rng.spawn(1)[0]
    c = _Canvas(arrays, r, height, width)
    closeup = r.u() < 0.3
    _camera(c, r, closeup)
    c.sh_front = c.sh_px = c.sh_nx = 1.0  # diffuse indoor light (people reuse the street painter's shades)
    xl, xr, hgt = -r.u(0.9, 3.5), r.u(0.9, 3.5), r.u(2.4, 3.2)
    depth = r.u(1.4, 3.5) if closeup else r.u(2.5, 8.0)
    _room_surfaces(c, r, xl, xr, depth, hgt)
    c.hor_col = np.float32(c.img[:, c.h // 2, c.w // 2])  # haze colour in _finish: the room's own light
    if closeup:  # one table filling the lower image, the camera just above its near edge
        th = c.cam_h - r.u(0.2, 0.6)
        _table(c, r, r.u(-0.2, 0.2), r.u(0.25, 0.5), r.u(1.2, 2.4), min(r.u(0.8, 1.5), depth - 0.6), th,
               r.pick(_WOOD))
    for _ in range(r.int(1, 6)):  # furniture against the walls and in the room
        kind, against = ("cabinet", "shelf", "sofa", "table", "bed")[r.int(0, 5)], r.u() < 0.6
        w, d = r.u(0.6, 2.2), r.u(0.4, 1.2)
        z = depth - d - 0.02 if against else r.u(0.8, max(depth - d, 0.9))
        x = r.u(xl + w / 2, max(xr - w / 2, xl + w / 2 + 0.01))
        col = r.pick(_FABRIC if kind in ("sofa", "bed") else _WOOD)
        if kind == "table":
            _table(c, r, x, z, w, d, r.u(0.45, 0.8), col)
        else:
            hmax = {"cabinet": 1.2, "shelf": 2.1, "sofa": 0.9, "bed": 0.6}[kind]
            h = r.u(0.4, hmax)
            _box(c, r, x, z, w, d, h, col, kind=kind)
            if h < 1.3 and r.u() < 0.5:
                _things(c, r, x, z, w, d, h)
    if not closeup and r.u() < 0.25:  # sometimes a person in the room
        _person(c, r, r.u(xl + 0.4, xr - 0.4), r.u(1.5, max(depth - 0.3, 1.6)))
    return Scene(_finish(c, arrays, r), c.mask, c.depth)
