"""A small vectorised ray caster for the indoor synthetic scenes: axis-aligned boxes, vertical cylinders and
spheres inside an axis-aligned room, seen by a pinhole camera that may yaw and pitch, lit by a point lamp with
hard shadows plus ambient light. Exact per-pixel depth (along the optical axis), surface normals and material
ids; procedural textures are evaluated in world coordinates so they stay fixed to the surfaces.

World: X right, Y up (floor at Y = 0), Z forward. Every pixel's ray is ``origin + t * R @ (x/f, y/f, 1)``, so
the ray parameter t of a hit *is* its depth along the optical axis. Pixels are processed in chunks so memory
stays bounded at any image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

_EPS = 1e-4
_CHUNK = 1 << 15  # pixels per intersection pass: (primitives x 3 x chunk) float32 temporaries


@dataclass
class Material:
    colour: np.ndarray  # (3,) float32 albedo, 0..255
    pattern: str = "plain"  # plain | planks | tiles | wood | stripes | fabric | emit
    period: float = 0.3  # metres: plank / tile / stripe width
    category: int = 0  # category id written into the mask
    seed: float = 0.0  # per-material phase of the hashed variations


@dataclass
class World:
    """Primitives as stacked arrays (one row each) plus the material id of every primitive."""

    room_lo: np.ndarray  # (3,) interior of the room: the camera is inside
    room_hi: np.ndarray
    room_mats: tuple[int, ...]  # -X, +X, floor, ceiling, -Z, +Z wall materials
    materials: list[Material] = field(default_factory=list)
    boxes: list[tuple[float, ...]] = field(default_factory=list)  # x0 y0 z0 x1 y1 z1 material
    cylinders: list[tuple[float, ...]] = field(default_factory=list)  # cx cz radius y0 y1 material
    spheres: list[tuple[float, ...]] = field(default_factory=list)  # cx cy cz radius material
    decals: list[tuple[float, ...]] = field(default_factory=list)  # wall face, u0 v0 u1 v1, material

    def material(self, m: Material) -> int:
        self.materials.append(m)
        return len(self.materials) - 1

    def box(self, lo, hi, mat: int) -> None:
        self.boxes.append((*lo, *hi, mat))


def camera_rays(h: int, w: int, f: float, yaw: float, pitch: float) -> np.ndarray:
    """(3, h*w) world directions with unit optical-axis component; pitch > 0 looks down, yaw > 0 to the right."""
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / f
    y = -(np.arange(h, dtype=np.float32) + 0.5 - h / 2) / f
    d = np.stack([np.broadcast_to(x[None], (h, w)), np.broadcast_to(y[:, None], (h, w)),
                  np.ones((h, w), np.float32)]).reshape(3, -1)
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    pitch_m = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], np.float32)  # look down: +Z tilts to -Y
    yaw_m = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], np.float32)
    return (yaw_m @ pitch_m @ d).astype(np.float32)


def _safe(d: np.ndarray) -> np.ndarray:
    return np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)


def _boxes(o: np.ndarray, d: np.ndarray, boxes: np.ndarray):
    """Nearest entry hit of rays o + t d with boxes (B, 7): (t, primitive index, face axis) per ray."""
    inv = 1.0 / _safe(d)  # (3, n)
    lo, hi = boxes[:, 0:3, None], boxes[:, 3:6, None]  # (B, 3, 1)
    t1, t2 = (lo - o[None]) * inv[None], (hi - o[None]) * inv[None]
    tmin = np.minimum(t1, t2)
    near, far = tmin.max(axis=1), np.maximum(t1, t2).min(axis=1)  # (B, n)
    t = np.where((near <= far) & (near > _EPS), near, np.inf)
    k = t.argmin(axis=0)
    cols = np.arange(t.shape[1])
    return t[k, cols], k, tmin[k, :, cols].argmax(axis=1)


def _cylinders(o: np.ndarray, d: np.ndarray, cyl: np.ndarray):
    """Nearest hit with vertical cylinders (C, 6) incl. their top caps: (t, index, is_cap)."""
    cx, cz, r, y0, y1 = (cyl[:, i, None] for i in range(5))
    ox, oz = o[0][None] - cx, o[2][None] - cz
    a = np.maximum(d[0] ** 2 + d[2] ** 2, 1e-12)[None]
    b = ox * d[0][None] + oz * d[2][None]
    disc = b * b - a * (ox * ox + oz * oz - r * r)
    with np.errstate(invalid="ignore"):
        side = (-b - np.sqrt(np.maximum(disc, 0))) / a
    y = o[1][None] + side * d[1][None]
    side = np.where((disc >= 0) & (side > _EPS) & (y >= y0) & (y <= y1), side, np.inf)
    cap = (y1 - o[1][None]) / _safe(d[1])[None]
    px, pz = ox + cap * d[0][None], oz + cap * d[2][None]
    cap = np.where((cap > _EPS) & (px * px + pz * pz <= r * r), cap, np.inf)
    t = np.minimum(side, cap)
    k = t.argmin(axis=0)
    cols = np.arange(t.shape[1])
    return t[k, cols], k, cap[k, cols] <= side[k, cols]


def _spheres(o: np.ndarray, d: np.ndarray, sph: np.ndarray):
    c, r = sph[:, 0:3, None], sph[:, 3, None]
    oc = o[None] - c  # (S, 3, n)
    a = (d * d).sum(0)[None]
    b = (oc * d[None]).sum(1)
    disc = b * b - a * ((oc * oc).sum(1) - r * r)
    t = (-b - np.sqrt(np.maximum(disc, 0))) / a
    t = np.where((disc >= 0) & (t > _EPS), t, np.inf)
    k = t.argmin(axis=0)
    return t[k, np.arange(t.shape[1])], k


def _room(o: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray):
    """Exit of rays from inside the room box: (t, face 0..5 = -X, +X, -Y, +Y, -Z, +Z)."""
    inv = 1.0 / _safe(d)
    t1, t2 = (lo[:, None] - o) * inv, (hi[:, None] - o) * inv
    far = np.maximum(t1, t2)
    axis = far.argmin(axis=0)
    cols = np.arange(d.shape[1])
    return far[axis, cols], axis * 2 + (d[axis, cols] > 0)


def _arrays(world: World):
    b = np.array(world.boxes, np.float32).reshape(-1, 7)
    c = np.array(world.cylinders, np.float32).reshape(-1, 6)
    s = np.array(world.spheres, np.float32).reshape(-1, 5)
    return b, c, s


def cast(world: World, origin: np.ndarray, dirs: np.ndarray):
    """Primary rays: depth t (n,), material id (n,), unit normal (3, n) facing the camera, hit point (3, n)."""
    boxes, cyls, sphs = _arrays(world)
    n = dirs.shape[1]
    t_out, mat, normal = np.empty(n, np.float32), np.empty(n, np.intp), np.zeros((3, n), np.float32)
    o = origin.astype(np.float32)[:, None]
    for s in range(0, n, _CHUNK):
        d = dirs[:, s:s + _CHUNK]
        m, cols = d.shape[1], np.arange(d.shape[1])
        t, face = _room(o, d, world.room_lo, world.room_hi)
        ids = np.asarray(world.room_mats)[face]
        nrm = np.zeros((3, m), np.float32)
        nrm[face // 2, cols] = -np.sign(d[face // 2, cols])
        if len(boxes):
            tb, kb, axis = _boxes(o, d, boxes)
            win = tb < t
            t, ids = np.where(win, tb, t), np.where(win, boxes[kb, 6].astype(np.intp), ids)
            nb = np.zeros((3, m), np.float32)
            nb[axis, cols] = -np.sign(d[axis, cols])
            nrm = np.where(win[None], nb, nrm)
        if len(cyls):
            tc, kc, is_cap = _cylinders(o, d, cyls)
            win = tc < t
            p = o + np.where(win, tc, 0)[None] * d  # misses: any finite point (their normal is unused)
            nc = np.stack([(p[0] - cyls[kc, 0]), np.zeros(m, np.float32), (p[2] - cyls[kc, 1])])
            nc /= np.maximum(np.sqrt((nc * nc).sum(0)), 1e-6)
            nc = np.where(is_cap[None], np.array([[0], [1], [0]], np.float32), nc)
            t, ids, nrm = np.where(win, tc, t), np.where(win, cyls[kc, 5].astype(np.intp), ids), np.where(win[None], nc, nrm)
        if len(sphs):
            ts, ks = _spheres(o, d, sphs)
            win = ts < t
            ns = (o + np.where(win, ts, 0)[None] * d - sphs[ks, 0:3].T) / sphs[ks, 3][None]
            t, ids, nrm = np.where(win, ts, t), np.where(win, sphs[ks, 4].astype(np.intp), ids), np.where(win[None], ns, nrm)
        t_out[s:s + m], mat[s:s + m], normal[:, s:s + m] = t, ids, nrm
    return t_out, mat, normal, o + t_out[None] * dirs


def shadowed(world: World, points: np.ndarray, light: np.ndarray) -> np.ndarray:
    """Whether the segment from each point (3, n) to the light meets a box, cylinder or sphere."""
    boxes, cyls, sphs = _arrays(world)
    out = np.zeros(points.shape[1], bool)
    for s in range(0, points.shape[1], _CHUNK):
        p = points[:, s:s + _CHUNK]
        d = light[:, None] - p
        o = p + 1e-3 * d  # start just off the surface
        hit = np.zeros(p.shape[1], bool)
        if len(boxes):
            hit |= _boxes(o, d, boxes)[0] < 1.0
        if len(cyls):
            hit |= _cylinders(o, d, cyls)[0] < 1.0
        if len(sphs):
            hit |= _spheres(o, d, sphs)[0] < 1.0
        out[s:s + p.shape[1]] = hit
    return out


def _hash(i: np.ndarray, seed: float) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (the shader classic sin-hash)."""
    v = np.sin(i.astype(np.float32) * np.float32(12.9898) + np.float32(seed * 78.233)) * np.float32(43758.5453)
    return v - np.floor(v)


def surface_coords(p: np.ndarray, normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface coordinates (a, b) in metres of world points p (3, n): the two axes other than the dominant
    normal's; b is the height on walls and sides, so textures stand upright."""
    axis = np.abs(normal).argmax(axis=0)
    return np.where(axis == 0, p[2], p[0]), np.where(axis == 1, p[2], p[1])


def texture(m: Material, p: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Brightness factor (n,) of material m at world points p (3, n) with normals (3, n)."""
    a, b = surface_coords(p, normal)
    q = m.period
    if m.pattern == "planks":
        row = np.floor(a / q)
        joint = np.floor(b / (4 * q) + _hash(row, m.seed))
        grain = 1 + 0.05 * np.sin(40 * b + 6 * _hash(row, m.seed + 1))
        seam = (np.abs((a / q) % 1 - 0.5) > 0.46) | (np.abs((b / (4 * q) + _hash(row, m.seed)) % 1 - 0.5) > 0.49)
        return np.where(seam, 0.55, (0.8 + 0.35 * _hash(row * 31 + joint, m.seed + 2)) * grain)
    if m.pattern == "tiles":
        cell = np.floor(a / q) * 101 + np.floor(b / q)
        seam = (np.abs((a / q) % 1 - 0.5) > 0.45) | (np.abs((b / q) % 1 - 0.5) > 0.45)
        return np.where(seam, 0.7, 0.92 + 0.16 * _hash(cell, m.seed))
    if m.pattern == "wood":
        return 0.93 + 0.07 * np.sin(2 * np.pi * (a / q * 6 + 0.4 * np.sin(b * 3 + m.seed)))
    if m.pattern == "stripes":
        return np.where((a / q) % 1 < 0.5, 1.0, 0.78)
    if m.pattern == "fabric":
        return 0.95 + 0.05 * np.sin(a * 60) * np.sin(b * 60) + 0.06 * np.sin(a * 7 + m.seed) * np.sin(b * 5)
    return np.ones(p.shape[1], np.float32)


def apply_decals(world: World, mat: np.ndarray, p: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Windows, doors and pictures: wall pixels inside a decal's rectangle take its material."""
    out = mat.copy()
    for face, u0, v0, u1, v1, dm in world.decals:
        if int(face) // 2 == 1:  # no decals on floor / ceiling
            continue
        on = mat == world.room_mats[int(face)]
        u = p[2] if int(face) < 2 else p[0]  # side walls run along Z, front / back walls along X
        inside = on & (u >= u0) & (u <= u1) & (p[1] >= v0) & (p[1] <= v1)
        out[inside] = int(dm)
    return out
