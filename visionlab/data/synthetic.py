"""Procedural street scenes with exact category masks and metric depth, deterministic from a seed.

Geometry: a pinhole camera at height ``cam_h`` above a flat ground plane looks along +Z (X right,
h up from the ground). Pitch is modelled by moving the horizon row ``hz``: a point (X, h, Z)
projects to x = cx + f X / Z, y = hz + f (cam_h - h) / Z and its depth along the optical axis is Z.
Objects are fronto-parallel rectangles (constant Z) or planes parallel to the road (constant X, Z
varying per column), composited through a z-buffer so image, mask and depth always describe the
same visible surface. Sizes are metric, so a seed gives the same scene at any output size.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from visionlab.data.synthetic_base import (CONSTRUCTION, FLAT, HUMAN, NATURE, OBJECT, SKY, SKY_DEPTH, VEHICLE, Rand,
                                           Scene, finish, labels, pal, smooth_noise)

_MAX_GROUND_DEPTH = 400.0  # ground right at the horizon is clamped here so it stays below SKY_DEPTH

_CAR = pal(235, 235, 232, 25, 25, 28, 160, 162, 166, 95, 98, 104, 165, 25, 30, 30, 55, 125, 35, 75, 50,
           205, 165, 45, 120, 75, 45, 70, 120, 175, 215, 215, 205, 50, 50, 60)
_FACADE = pal(185, 172, 150, 150, 140, 130, 205, 195, 175, 120, 110, 100, 170, 115, 85, 140, 85, 65,
              215, 205, 190, 110, 115, 122, 190, 180, 150, 165, 150, 115, 95, 90, 88)
_PAVING = pal(150, 148, 145, 170, 160, 150, 130, 128, 130, 175, 170, 160, 140, 120, 110)
_GREEN = pal(55, 90, 35, 75, 110, 45, 45, 75, 40, 95, 120, 50, 120, 115, 50, 65, 100, 60)
_CLOTH = pal(30, 30, 35, 205, 205, 200, 40, 60, 120, 125, 30, 30, 60, 90, 60, 150, 130, 100, 80, 80, 90,
             200, 150, 40, 90, 40, 90, 230, 120, 150, 20, 40, 70, 180, 90, 40)
_SKIN = pal(240, 200, 170, 210, 160, 120, 170, 120, 80, 110, 75, 50, 225, 180, 150)
_HAIR, _GLASS = pal(30, 25, 20, 90, 60, 35, 200, 170, 110, 60, 60, 60), pal(40, 48, 60, 70, 80, 95, 55, 55, 50)
_LIGHTS = ((60, 230, 90), (250, 180, 30), (250, 40, 30))  # green, amber, red from the bottom
_SIGNS = (((200, 30, 30), (240, 240, 235)), ((30, 70, 160), (40, 90, 190)), ((240, 240, 235), (30, 110, 60)))


class _Canvas:
    """Camera + planar frame buffers; drawing helpers work on bounding-box slices of them."""

    def __init__(self, rng: np.random.Generator, r: Rand, h: int, w: int) -> None:
        self.h, self.w, self.cx = h, w, w / 2
        self.f = w * r.u(0.72, 1.05)  # ~51-70 deg horizontal field of view
        self.cam_h = r.u(1.2, 2.0)
        pitch = math.radians(r.u(-1.5, 4.0))  # looking down moves the horizon up
        self.hz = float(np.clip(h / 2 - self.f * math.tan(pitch), 0.3 * h, 0.62 * h))
        self.img = np.zeros((3, h, w), np.float32)  # planar: broadcasting per pixel is fast
        self.mask = np.full((h, w), SKY, np.uint8)
        self.depth = np.full((h, w), SKY_DEPTH, np.float32)
        self.grain = rng.random((h, w), dtype=np.float32) - 0.5  # per-pixel texture
        self.blot = smooth_noise(rng, h, w, max(h // 8, 2), max(w // 8, 2)) - 0.5  # ~8 px blobs
        self.tex = 1 + 0.1 * self.grain + 0.16 * self.blot  # man-made surfaces
        self.leaf = np.maximum(1 + 0.6 * self.grain + 1.1 * self.blot, 0.2)  # foliage
        self.casters: list[tuple[float, ...]] = []  # shadow boxes (x0, x1, z0, z1, h0, h1)

    def fp(self, z: float, x0: float, x1: float, h0: float, h1: float):
        """Window of a fronto-parallel rectangle at depth z: (slice, X of columns (1,w), height of rows (h,1))."""
        k = self.f / z
        c0, c1 = max(math.floor(self.cx + k * x0), 0), min(math.ceil(self.cx + k * x1), self.w)
        r0 = max(math.floor(self.hz + k * (self.cam_h - h1)), 0)
        r1 = min(math.ceil(self.hz + k * (self.cam_h - h0)), self.h)
        if c0 >= c1 or r0 >= r1:
            return None
        u = (np.arange(c0, c1, dtype=np.float32)[None] + (0.5 - self.cx)) / k
        v = self.cam_h - (np.arange(r0, r1, dtype=np.float32)[:, None] + (0.5 - self.hz)) / k
        return (slice(r0, r1), slice(c0, c1)), u, v

    def side(self, x: float, z0: float, z1: float, h0: float, h1: float):
        """Window of the plane X = x between depths z0..z1: (slice, Z per column (1,w), height (h,w))."""
        z0 = max(z0, 0.5)
        if z1 <= z0:
            return None
        xa, xb = self.cx + self.f * x / z0, self.cx + self.f * x / z1
        ys = [self.hz + self.f * (self.cam_h - hh) / zz for zz in (z0, z1) for hh in (h0, h1)]
        c0, c1 = max(math.floor(min(xa, xb)), 0), min(math.ceil(max(xa, xb)), self.w)
        r0, r1 = max(math.floor(min(ys)), 0), min(math.ceil(max(ys)), self.h)
        if c0 >= c1 or r0 >= r1:
            return None
        dx = np.arange(c0, c1, dtype=np.float32) + (0.5 - self.cx)
        dx[np.abs(dx) < 1e-3] = 1e-3  # the column through the vanishing point never meets the plane
        z = (self.f * x / dx)[None]
        v = self.cam_h - (np.arange(r0, r1, dtype=np.float32)[:, None] + (0.5 - self.hz)) * z / self.f
        return (slice(r0, r1), slice(c0, c1)), z, v

    def paint(self, sl, depth, lab: np.ndarray, cols, cat, shade: float = 1.0, leafy: bool = False) -> None:
        """Z-buffered blit of a label image: label i gets colour cols[i-1] and category cat (or cat[i-1])."""
        d = self.depth[sl]
        win = (lab > 0) & (depth <= d)
        if not win.any():
            return
        np.copyto(d, depth, where=win)
        li = lab[win] - 1
        self.mask[sl][win] = cat if np.isscalar(cat) else np.asarray(cat, np.uint8)[li]
        tex = (self.leaf if leafy else self.tex)[sl][win]
        self.img[:, sl[0], sl[1]][:, win] = np.array(cols, np.float32).T[:, li] * (shade * tex)


def _layout(r: Rand) -> SimpleNamespace:
    """Road cross-section in metres; the camera sits at X = 0 in one of the lanes (right-hand traffic)."""
    n, lw = r.int(1, 5), r.u(2.8, 3.7)
    two_way = n >= 2 and r.u() < 0.75
    left = -lw * ((r.int(n // 2, n) if two_way else r.int(0, n)) + 0.5)
    park, dash = [r.u() < 0.35, r.u() < 0.35], (r.u(6, 12), r.u(2, 4), r.u(0, 12))  # dash period, length, phase
    lines = []  # (x, dash or None, paint label: 9 white / 10 yellow)
    for k in range(1, n):
        if two_way and k == n // 2:  # centre line: single/double, solid/dashed, white/yellow
            paint, ld, gap = 9 + (r.u() < 0.4), None if r.u() < 0.6 else dash, 0.15 * (r.u() < 0.5)
            lines += [(left + k * lw - gap, ld, paint), (left + k * lw + gap, ld, paint)]
        else:
            lines.append((left + k * lw, dash, 9))
    if r.u() < 0.6:
        lines += [(left + 0.2, None, 9), (left + n * lw - 0.2, None, 9)]
    sides = []
    for _ in range(2):
        ts, sw = r.u(0.8, 3.0) if r.u() < 0.25 else 0.0, r.u(1.5, 5.0)  # grass strip, sidewalk widths
        sides.append(SimpleNamespace(kind="park" if r.u() < 0.28 else "city", ts=ts, sw=sw, outer=0.25 + ts + sw))
    lanes, away = [left + (k + 0.5) * lw for k in range(n)], [not two_way or k >= n // 2 for k in range(n)]
    return SimpleNamespace(lanes=lanes, away=away, lw=lw, park=park, xl=left - 2.3 * park[0],
                           xr=left + n * lw + 2.3 * park[1], lines=lines,
                           sides=sides, zc=r.u(8, 30) if r.u() < 0.3 else 0.0)


def _lighting(c: _Canvas, r: Rand) -> None:
    c.overcast = r.u() < 0.3
    el, az = r.u(0.45, 1.15), r.u(-math.pi, math.pi)
    s = (math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az))  # unit vector towards the sun
    amb, dif = (0.85, 0.2) if c.overcast else (0.55, 0.6)
    ref = amb + 0.5 * dif  # shades are relative to a face lit at 60 deg incidence
    c.sh_front = (amb + dif * max(0.0, -s[2])) / ref  # faces looking at the camera (normal -Z)
    c.sh_px, c.sh_nx = (amb + dif * max(0.0, s[0])) / ref, (amb + dif * max(0.0, -s[0])) / ref
    c.sh_ground = (amb + dif * s[1]) / ref
    c.shadow_k = 0.8 if c.overcast else amb / (amb + dif * s[1])
    c.shadow_off = (0.0, 0.0) if c.overcast else (-s[0] / s[1], -s[2] / s[1])  # ground offset per metre height


def _sky(c: _Canvas, r: Rand) -> None:
    rows = min(max(math.ceil(c.hz) + 1, 1), c.h)
    if c.overcast:
        g = r.u(150, 215)
        zen, hor = np.float32([g * 0.9, g * 0.92, g]), np.float32([g + 20, g + 20, g + 22])
    else:
        zen = np.float32([r.u(50, 110), r.u(110, 165), r.u(195, 245)])
        hor = np.float32([r.u(175, 225), r.u(195, 230), r.u(225, 250)])
    t = np.clip((c.hz - 0.5 - np.arange(rows, dtype=np.float32)) / max(c.hz, 1.0), 0, 1) ** 0.7
    col = hor[:, None, None] + (zen - hor)[:, None, None] * t[:, None]
    if r.u() < 0.65:  # clouds: two octaves of value noise (fixed grids: same clouds at any size)
        n = 0.65 * smooth_noise(r.rng, rows, c.w, 3, 5) + 0.35 * smooth_noise(r.rng, rows, c.w, 7, 14)
        a = np.clip((n - r.u(0.35, 0.65)) / 0.15, 0, 1) * r.u(0.5, 0.95)
        col = col + a * (np.float32(r.u(200, 250)) - 25 * n - col)
    c.img[:, :rows], c.hor_col = np.minimum(col, 255), hor


def _ground(c: _Canvas, r: Rand, lay: SimpleNamespace) -> None:
    r0 = min(max(math.floor(c.hz - 0.5) + 1, 0), c.h)
    z = np.minimum(c.f * c.cam_h / (np.arange(r0, c.h, dtype=np.float32)[:, None] + (0.5 - c.hz)), _MAX_GROUND_DEPTH)
    c.pcol = (np.arange(c.w, dtype=np.float32) + (0.5 - c.cx)) / c.f  # X / Z of each column
    x, (L, R) = c.pcol * z, lay.sides
    # cross-section labels 0..8: left verge, sidewalk, grass strip, kerb, road, kerb, strip, sidewalk, verge
    lab = np.digitize(x, [lay.xl - L.outer, lay.xl - 0.25 - L.ts, lay.xl - 0.25, lay.xl,
                          lay.xr, lay.xr + 0.25, lay.xr + 0.25 + R.ts, lay.xr + R.outer]).astype(np.uint8)
    grass, walk = [r.pick(_GREEN, 0.9, 1.2) for _ in "LR"], [r.pick(_PAVING) for _ in "LR"]
    kerb, road = [np.float32([r.u(150, 210)] * 3) for _ in "LR"], np.float32([1, 1, r.u(0.98, 1.08)]) * r.u(55, 115)
    verge = [grass[i] if s.kind == "park" else r.pick(_PAVING, 0.8, 1.0) for i, s in enumerate(lay.sides)]
    colours = np.stack([verge[0], walk[0], grass[0], kerb[0], road, kerb[1], grass[1], walk[1], verge[1],
                        *pal(235, 235, 230, 230, 190, 60, 225, 225, 220)])  # + white, yellow, zebra paint
    nat = np.array([L.kind == "park", 0, 1, 0, 0, 0, 1, 0, R.kind == "park", 0, 0, 0], bool)
    half = np.maximum(0.065, 0.5 * z / c.f)  # lines are 13 cm wide but at least ~1 px (coverage below)
    road_on = lab == 4
    for xm, dash, paint in lay.lines:
        on = road_on & (np.abs(x - xm) < half)
        if dash:
            on &= ((z + dash[2]) % dash[0] < dash[1]) & (z < 150)
        lab[on] = paint
    if lay.zc:  # zebra crossing + stop line
        zebra = ((z >= lay.zc) & (z <= lay.zc + 3)) * (((x - lay.xl) % 1.0) < 0.5)
        lab[road_on & (zebra | ((z > lay.zc - 1.5) & (z < lay.zc - 1.1)))] = 11
    col = colours.T[:, lab]
    thin = (lab == 9) | (lab == 10)  # far lines thinner than a pixel: blend paint with asphalt by coverage
    col[:, thin] = road[:, None] + (0.065 / half)[np.nonzero(thin)[0], 0] * (col[:, thin] - road[:, None])
    natural = nat[lab]
    col *= c.sh_ground * (1 + np.where(natural, 0.5, 0.13) * (c.grain[r0:] + 1.5 * c.blot[r0:]))
    c.img[:, r0:], c.depth[r0:], c.mask[r0:] = col, z, np.where(natural, NATURE, FLAT)
    c.zrow, c.g0 = np.full((c.h, 1), np.inf, np.float32), r0  # ground depth per row (inf above the horizon)
    c.zrow[r0:] = z


def _buildings(c: _Canvas, r: Rand, sgn: int, front: float) -> None:
    """One side's row of building blocks, facades on the plane X = sgn * front, drawn in one pass."""
    z, zend, blocks = r.u(-5, 10), r.u(80, 250), []
    while z < zend:
        ln = r.u(8, 35) * (1 + z / 100)
        if z > 5 and r.u() < 0.15:  # a gap closed by a wall or fence
            _strip(c, r, sgn * front, z, z + ln, r.u(1.0, 2.5), CONSTRUCTION, r.pick(_FACADE, 0.6, 1.0), r.u() < 0.5)
        else:  # start, end, height, window spacing, width, floor height, ground floor, window top, shops, colours
            blocks.append((z, z + ln, r.u(6, 30), r.u(2.4, 4.5), r.u(0.3, 0.6), r.u(2.8, 3.6), r.u(3.0, 4.5),
                           r.u(0.7, 0.9), r.u() < 0.6, r.pick(_FACADE, 0.75, 1.15), r.pick(_GLASS)))
        z += ln + (r.u(2, 8) if r.u() < 0.25 else 0)
    if not blocks:
        return
    z0, z1, hgt, ws, wf, fh, gf, wt, shops = (np.array(a, np.float32) for a in list(zip(*blocks))[:9])
    walls, glass, n, x = [b[9] for b in blocks], [b[10] for b in blocks], len(blocks), sgn * front

    def windows(s, v, i):  # window grid in facade coordinates: s along the wall, v height
        sv = ((v - gf[i]) % fh[i]) / fh[i]
        return (np.abs((s % ws[i]) / ws[i] - 0.5) < wf[i] / 2) & (sv > 0.3) & (sv < wt[i]) & (v > gf[i]) & (
            v < hgt[i] - 0.8)

    got = c.side(x, float(z0[0]), float(z1[-1]), 0, float(hgt.max()))
    if got:
        sl, zz, v = got
        i = np.clip(np.searchsorted(z0, zz, side="right") - 1, 0, n - 1)  # block of each column
        s = zz - z0[i]
        inside = (zz <= z1[i]) & (zz >= z0[i]) & (v >= 0) & (v <= hgt[i])
        win = windows(s, v, i) & (zz < math.sqrt(c.f * abs(x) / 2))  # no windows below ~3 px spacing (aliasing)
        shop = (shops[i] > 0) & (np.abs((s % 6.0) / 6.0 - 0.5) < 0.38) & (v > 0.3) & (v < gf[i] - 0.7)
        kind = (v > hgt[i] - 0.5) + 2 * win + 3 * shop  # 0 wall, 1 cornice, 2 window, 3 shop front
        lab = np.where(inside, i + 1 + n * kind, 0).astype(np.uint8)
        cols = walls + [w * 0.75 for w in walls] + glass + [g * 0.7 for g in glass]
        c.paint(sl, zz, lab, cols, CONSTRUCTION, c.sh_px if sgn < 0 else c.sh_nx)
    xa, xb = min(x, x + 15 * sgn), max(x, x + 15 * sgn)
    for k in range(n):
        if (k == 0 or z0[k] > z1[k - 1] + 0.1) and 1 < z0[k] < 80:  # end wall facing the camera
            got = c.fp(float(z0[k]), xa, xb, 0, float(hgt[k]))
            if got:
                sl, u, v = got
                inside = (u >= xa) & (u <= xb) & (v >= 0) & (v <= hgt[k])
                lab = labels(inside.shape, inside, inside & windows(u, v, k))
                c.paint(sl, float(z0[k]), lab, [walls[k] * 0.95, glass[k]], CONSTRUCTION, c.sh_front)
        if z0[k] < 60:
            c.casters.append((xa, xb, float(z0[k]), float(z1[k]), 0.0, float(hgt[k])))


def _strip(c: _Canvas, r: Rand, x: float, z0: float, z1: float, hgt: float, cat: int, col, fence=False) -> None:
    """Hedge / treeline (bumpy top) or wall / fence along the road at lateral position x."""
    fr, ph = r.u(0.15, 0.5), r.u(0, 6.3)
    got = c.side(x, z0, z1, 0, hgt * 1.4)
    if not got:
        return
    sl, z, v = got
    bumps = 0.15 * np.sin(z * fr + ph) + 0.1 * np.sin(z * 2.7 * fr) + 0.4 * c.blot[sl]
    top = hgt * (1 + bumps) if cat == NATURE else hgt
    inside = (z >= z0) & (z <= z1) & (v >= 0) & (v <= top)
    if fence:  # posts + top rail + mesh
        inside &= (((z - z0) % 2.5) < 0.12) | (v > hgt - 0.08) | (((z * 6) % 1.0 < 0.25) & ((v * 6) % 1.0 < 0.25))
    c.paint(sl, z, inside.view(np.uint8), [col], cat, 0.9 * (c.sh_px if x < 0 else c.sh_nx), cat == NATURE)
    c.casters.append((x - 0.2, x + 0.2, z0, z1, 0.0, hgt))


def _tree(c: _Canvas, r: Rand, x: float, z: float) -> None:
    th, cr = r.u(1.8, 3.5), r.u(1.3, 3.2)  # trunk height, canopy radius
    green, bark = r.pick(_GREEN, 0.8, 1.25), r.pick(pal(90, 70, 55, 70, 60, 50))
    blobs = [(cr * r.u(-0.6, 0.6), th + cr * r.u(0.7, 1.3), cr * r.u(0.5, 0.85)) for _ in range(r.int(3, 7))]
    got = c.fp(z, x - 1.5 * cr, x + 1.5 * cr, 0, th + 2.2 * cr)
    if not got:
        return
    sl, u, v = got
    u, canopy, edge = u - x, False, 1 + 0.9 * c.blot[sl]
    for bu, bv, br in blobs if v.shape[0] > 12 else blobs[:1]:  # union of blobs with noisy edges
        canopy = canopy | ((u - bu) ** 2 + (v - bv) ** 2 < (br * edge) ** 2)
    trunk = (np.abs(u) < max(0.16, 0.6 * z / c.f)) & (v < th + cr)
    c.paint(sl, z, labels(edge.shape, trunk, canopy), [bark, green], NATURE, c.sh_front, True)
    c.casters.append((x - cr, x + cr, z - cr, z + cr, th, th + 2 * cr))


def _pole(c: _Canvas, r: Rand, x: float, z: float, kind: str, toward: int) -> None:
    """Street lamp with an arm over the road, traffic sign or traffic light."""
    hw, g = max(0.07, 0.55 * z / c.f), r.u(60, 150)  # at least ~1 px wide so far poles do not vanish
    hgt = r.u(6, 9) if kind == "lamp" else r.u(2.2, 3.2)
    al, ps, shape, scheme, on = r.u(1.2, 2.8), r.u(0.6, 0.95), r.int(0, 3), r.int(0, 3), r.int(0, 3)
    xe = x + toward * al if kind == "lamp" else x
    got = c.fp(z, min(x, xe) - 0.5, max(x, xe) + 0.5, 0, hgt + 1.0)
    if not got:
        return
    sl, u, v = got
    du = u - x
    regions, cols = [(np.abs(du) < hw) & (v <= hgt)], [(g, g, g)]
    if kind == "lamp":
        regions[0] |= (v >= hgt - max(0.1, hw)) & (v <= hgt) & (du * toward >= 0) & (du * toward <= al)
        regions.append((np.abs(u - xe) < 0.35) & (v >= hgt - 0.25) & (v <= hgt + 0.05))
        cols.append((215, 215, 200))
    elif kind == "sign":
        dv, a = v - hgt - ps / 2, 0.433 * ps
        for m in (0.0, 0.07):  # rim, then the inner face
            regions.append(du**2 + dv**2 < (ps / 2 - m) ** 2 if shape == 0 else
                           (dv >= m - a) & (np.abs(du) <= (a - 2 * m - dv) * 0.577) if shape == 1 else
                           (np.abs(du) < ps / 2 - m) & (np.abs(dv) < 0.35 * ps - m))
        cols += _SIGNS[scheme]
    else:  # traffic light: housing + three lamps, one lit
        regions.append((np.abs(du) < 0.18) & (v >= hgt) & (v <= hgt + 1))
        regions += [du**2 + (v - hgt - 0.2 - 0.3 * i) ** 2 < 0.01 for i in range(3)]
        cols += [(30, 30, 32)] + [lit if i == on else (60, 55, 50) for i, lit in enumerate(_LIGHTS)]
    c.paint(sl, z, labels(regions[0].shape, *regions), cols, OBJECT, c.sh_front)
    if z < 25:  # thin shadows further away are sub-pixel
        c.casters.append((x - hw, x + hw, z - hw, z + hw, 0.0, hgt))


def _vehicle(c: _Canvas, r: Rand, x: float, z: float, away: bool, big: bool) -> float:
    """Car / van / bus box: near face (rear if ``away``) plus the side facing the camera; returns length."""
    k = r.u()
    if big and k < 0.08:  # bus / truck: width, height, length, belt line, roof taper, cabin span, pillar slope
        w, hh, ln, belt, taper, cab, slope = 2.5, r.u(2.9, 3.4), r.u(9, 12), 0.35, 0.0, (0.03, 0.97), 0.0
    elif k < 0.3:  # van / SUV
        w, hh, ln, belt, taper, cab, slope = r.u(1.85, 2.05), r.u(1.7, 2.1), r.u(4.5, 5.3), 0.5, 0.1, (0.12, 0.88), 0.2
    else:
        w, hh, ln, belt, taper, cab, slope = r.u(1.7, 1.9), r.u(1.4, 1.6), r.u(4.0, 4.8), 0.55, 0.22, (0.2, 0.7), 0.5
    cab = cab if away else (1 - cab[1], 1 - cab[0])
    col, hw, bh = r.pick(_CAR, 0.85, 1.08), w / 2, belt * hh
    glass, lamp = np.float32([45, 52, 62]) * r.u(0.8, 1.5), (200, 25, 25) if away else (240, 240, 215)
    got = c.fp(z, x - hw, x + hw, 0, hh)
    if got:
        sl, u, v = got
        au, t = np.abs(u - x), (v - bh) / (hh - bh)
        cw = hw - 0.05 - taper * t  # cabin half-width tapers towards the roof
        shell = ((v >= 0.15) & (v <= bh)) | ((v > bh) & (v <= hh) & (au <= cw))
        lab = shell.view(np.uint8) if v.shape[0] <= 6 else labels(  # details only where they span a few pixels
            shell.shape, shell, (v >= 0.15) & (v <= 0.3), (v >= bh + 0.06) & (v <= hh - 0.07) & (au <= cw - 0.07),
            (v >= bh - 0.22) & (v <= bh - 0.06) & (au >= hw - 0.32) & (au <= hw - 0.04),
            (au < 0.25) & (v > 0.36) & (v < 0.47), (v < 0.3) & (au >= hw - 0.3) & (au <= hw - 0.05))
        c.paint(sl, z, lab, [col, col * 0.5, glass, lamp, (225, 225, 215), (22, 22, 24)], VEHICLE, c.sh_front)
    xs = x - hw if x - hw > 0.05 else (x + hw if x + hw < -0.05 else None)
    got = c.side(xs, z, z + ln, 0, hh) if xs is not None else None
    if got:
        sl, zz, v = got
        s, t = zz - z, (v - bh) / (hh - bh)
        a, b = cab[0] * ln + slope * t, cab[1] * ln - slope * t
        shell = (s >= 0) & (s <= ln) & (((v >= 0.15) & (v <= bh)) | ((v > bh) & (v <= hh) & (s >= a) & (s <= b)))
        lab = shell.view(np.uint8)
        if v.shape[0] > 6:  # windows, pillars and wheels only where they span a few pixels
            pillar = np.abs(s - 0.5 * (a + b)) < 0.05 if ln < 8 else ((s - a) % 1.3) < 0.12
            win = (v >= bh + 0.06) & (v <= hh - 0.07) & (s >= a + 0.1) & (s <= b - 0.1) & ~pillar
            r1, r2 = (s - 0.85) ** 2 + (v - 0.32) ** 2, (s - ln + 0.9) ** 2 + (v - 0.32) ** 2
            lab = labels(shell.shape, shell, win, (r1 < 0.1) | (r2 < 0.1), (r1 < 0.02) | (r2 < 0.02))
        c.paint(sl, zz, lab, [col, glass, (22, 22, 24), (140, 140, 145)], VEHICLE, c.sh_px if xs < 0 else c.sh_nx)
    c.casters.append((x - hw, x + hw, z, z + ln, 0.0, hh))
    return ln


def _person(c: _Canvas, r: Rand, x: float, z: float) -> None:
    hp, st, sw, lo = r.u(1.5, 1.9), r.u(-0.1, 0.1), r.u(-0.1, 0.1), 0.3 if r.u() < 0.3 else 0.48  # lo < 0.48: coat
    cols = [r.pick(_CLOTH, 0.7, 1.0), r.pick(_CLOTH, 0.8, 1.15), r.pick(_SKIN, 0.9, 1.05), r.pick(_HAIR), (30, 28, 28)]
    got = c.fp(z, x - 0.3 * hp, x + 0.3 * hp, 0, hp)
    if not got:
        return
    sl, u, v = got
    u, v = (u - x) / hp, v / hp  # body-normalised coordinates
    if v.shape[0] < 10:  # a few pixels tall: silhouette only
        body = ((np.abs(u) < 0.11) & (v < 0.86)) | (u**2 + (v - 0.925) ** 2 < 0.068**2)
        c.paint(sl, z, body.view(np.uint8), cols[1:2], HUMAN, c.sh_front)
        return
    lw, aw = max(0.045, 0.6 * z / (c.f * hp)), max(0.028, 0.5 * z / (c.f * hp))  # limbs >= ~1 px
    legs = (v <= 0.5) & ((np.abs(u - 0.05 - 2 * st * (0.5 - v)) < lw) | (np.abs(u + 0.05 + 2 * st * (0.5 - v)) < lw))
    torso = (v > lo) & (v <= 0.82) & (np.abs(u) < 0.12 + 0.2 * np.maximum(0.48 - v, 0) - 1.5 * np.maximum(v - 0.78, 0))
    swing = 0.14 + sw * (0.8 - v)
    arms = (v > 0.46) & (v < 0.8) & ((np.abs(u - swing) < aw) | (np.abs(u + swing) < aw))
    head = u**2 + (v - 0.925) ** 2 < 0.068**2
    skin = (arms & (v < 0.52)) | ((np.abs(u) < 0.03) & (v > 0.8) & (v < 0.88)) | head
    lab = labels(legs.shape, legs, torso | arms, skin, head & (v > 0.935), legs & (v < 0.03))
    c.paint(sl, z, lab, cols, HUMAN, c.sh_front)
    c.casters.append((x - 0.2, x + 0.2, z - 0.12, z + 0.12, 0.0, hp))


def _roadside(c: _Canvas, r: Rand, lay: SimpleNamespace, sgn: int) -> None:
    sd, edge = lay.sides[sgn > 0], abs(lay.xr if sgn > 0 else lay.xl)
    out = edge + sd.outer  # lateral distance of the sidewalk's outer edge
    if sd.kind == "city":
        _buildings(c, r, sgn, out + (r.u(0, 4) if r.u() < 0.3 else 0))
    else:  # park: hedge or fence, scattered trees, treeline behind
        if r.u() < 0.5:
            fence = r.u() < 0.4
            col = r.pick(pal(110, 110, 105, 90, 80, 70)) if fence else r.pick(_GREEN, 0.7, 1.0)
            _strip(c, r, sgn * (out + 0.3), 1, 200, r.u(0.8, 1.8), CONSTRUCTION if fence else NATURE, col, fence)
        for _ in range(r.int(3, 8)):
            _tree(c, r, sgn * (out + r.u(1.5, 25)), r.u(4, 80))
        _strip(c, r, sgn * (out + r.u(15, 45)), 2, 400, r.u(7, 16), NATURE, r.pick(_GREEN, 0.6, 0.9))
    if r.u() < 0.75:  # street lamps along the kerb
        z, sp = r.u(3, 25), r.u(20, 40)
        while z < 110:
            _pole(c, r, sgn * (edge + 0.5), z, "lamp", -sgn)
            z += sp
    if r.u() < 0.5 or sd.ts:  # street trees in the grass strip / tree pits
        z, xt = r.u(3, 12), sgn * (edge + 0.25 + (sd.ts / 2 if sd.ts else min(0.8, sd.sw / 2)))
        while z < 80:
            _tree(c, r, xt, z)
            z += r.u(8, 18) * (1 + z / 60)


def _backdrop(c: _Canvas, r: Rand, city: float) -> None:
    """Distant blocks and treeline across the end of the street: one blit, heights per column."""
    zf = r.u(90, 250)
    xm = zf * c.cx / c.f + 10
    edges, tops, cols, cats = [-xm], [], [], []
    while edges[-1] < xm:
        build = r.u() < city
        edges.append(edges[-1] + r.u(8, 40))
        tops.append(r.u(4, 35) if build else -r.u(6, 15))  # negative = trees
        cols.append(r.pick(_FACADE, 0.7, 1.0) if build else r.pick(_GREEN, 0.6, 0.9))
        cats.append(CONSTRUCTION if build else NATURE)
    got = c.fp(zf, -xm, xm, 0, 40)
    if got:
        sl, u, v = got
        i = np.clip(np.searchsorted(edges, u) - 1, 0, len(tops) - 1)
        top = np.float32(tops)[i]
        top = np.where(top > 0, top, -top * (1 + 0.15 * np.sin(u * 0.5) + 0.5 * c.blot[sl]))
        c.paint(sl, zf, np.where((v >= 0) & (v <= top), i + 1, 0).astype(np.uint8), cols, cats, c.sh_front)


def _traffic_and_people(c: _Canvas, r: Rand, lay: SimpleNamespace) -> None:
    for x, away in zip(lay.lanes, lay.away):
        z = r.u(7, 25) if abs(x) < 0.5 * lay.lw else r.u(3, 25)  # keep a gap ahead of the ego car
        while z < 100:
            ln = _vehicle(c, r, x + r.u(-0.3, 0.3), z, away, True) if r.u() < 0.55 else 5.0
            z += ln + r.u(5, 30) * (1 + z / 25)
    for sgn, on in zip((-1, 1), lay.park):  # parked rows along the kerb, some facing either way
        z, x = r.u(2, 10), (lay.xl + 1.15) if sgn < 0 else (lay.xr - 1.15)
        while on and z < 70:
            ln = _vehicle(c, r, x, z, r.u() < 0.6, False) if r.u() < 0.7 else 5.0
            z += ln + r.u(0.5, 5) * (1 + z / 30)
    poles = [(r.u(5, 45), "sign") for _ in range(r.int(1, 4))]
    poles += [(lay.zc - 1.0, "light")] * 2 if lay.zc else ([(r.u(8, 40), "light")] if r.u() < 0.3 else [])
    for i, (z, kind) in enumerate(poles):
        sgn = (-1) ** i if kind == "light" else (-1 if r.u() < 0.5 else 1)
        _pole(c, r, sgn * (abs(lay.xr if sgn > 0 else lay.xl) + r.u(0.3, 0.8)), z, kind, -sgn)
    near_side = -1 if -lay.xl < lay.xr else 1
    for i in range(r.int(1, 7)):
        sgn = near_side if i < 2 else (-1 if r.u() < 0.5 else 1)
        sd = lay.sides[sgn > 0]
        x = sgn * (abs(lay.xr if sgn > 0 else lay.xl) + 0.25 + sd.ts + r.u(0.2, max(sd.sw - 0.2, 0.3)))
        z = r.u(5, 13) if i < 2 else 4 + 50 * r.u() ** 2
        _person(c, r, x, max(z, abs(x) * c.f / (0.8 * c.cx)) if i < 2 else z)  # the first two stay in view
    for _ in range(r.int(0, 4) if lay.zc else 0):  # pedestrians on the zebra crossing
        _person(c, r, r.u(lay.xl, lay.xr), lay.zc + r.u(0.5, 2.5))


def _shadows(c: _Canvas) -> None:
    """Darken visible ground inside the sun shadow of every caster box (only the footprint when overcast)."""
    hit, (dx, dz) = np.zeros((c.h, c.w), bool), c.shadow_off
    for x0, x1, z0, z1, h0, h1 in c.casters:
        xs, zs = [x + dx * t for x in (x0, x1) for t in (h0, h1)], [z + dz * t for z in (z0, z1) for t in (h0, h1)]
        zlo, zhi = max(min(zs), 0.5), max(zs)
        if z0 > 60 or zhi <= 0.5:
            continue
        cols = [c.cx + c.f * xx / zz for xx in (min(xs), max(xs)) for zz in (zlo, zhi)]
        r0, r1 = max(int(c.hz + c.f * c.cam_h / zhi), c.g0), min(int(c.hz + c.f * c.cam_h / zlo) + 2, c.h)
        q0, q1 = max(int(min(cols)) - 1, 0), min(int(max(cols)) + 2, c.w)
        if r0 >= r1 or q0 >= q1:
            continue
        gz, lo, hi = c.zrow[r0:r1], np.float32(h0), np.float32(h1)
        for p, a, b, d in ((c.pcol[q0:q1] * gz, x0, x1, dx), (gz, z0, z1, dz)):
            if abs(d) < 1e-6:  # no offset along this axis: the point must lie inside the footprint
                lo = np.where((p >= a) & (p <= b), lo, np.inf)
            else:  # heights t for which the point moved back by t * offset lies inside [a, b]
                t1, t2 = (p - a) / d, (p - b) / d
                lo, hi = np.maximum(lo, np.minimum(t1, t2)), np.minimum(hi, np.maximum(t1, t2))
        hit[r0:r1, q0:q1] |= lo <= hi
    c.img[:, hit & (c.depth == c.zrow)] *= c.shadow_k


def render_scene(seed: int, height: int = 256, width: int = 512) -> Scene:
    """Render one random street scene; the same (seed, height, width) gives bit-identical output."""
    if height < 32 or width < 32:
        raise ValueError(f"render_scene needs height, width >= 32, got {height}x{width}")
    rng = np.random.default_rng(seed)
    r, arrays = Rand(rng), rng.spawn(1)[0]  # per-pixel arrays get their own stream: same layout at any size
    c = _Canvas(arrays, r, height, width)
    lay = _layout(r)
    _lighting(c, r)
    _sky(c, r)
    _ground(c, r, lay)
    for sgn in (-1, 1):
        _roadside(c, r, lay, sgn)
    _backdrop(c, r, 0.75 if any(s.kind == "city" for s in lay.sides) else 0.15)
    _traffic_and_people(c, r, lay)
    _shadows(c)
    return Scene(finish(c, arrays, r), c.mask, c.depth)
