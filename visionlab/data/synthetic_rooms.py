"""Procedural indoor scenes with exact metric depth, deterministic from a seed: furnished rooms seen from any
direction and tabletop close-ups, the indoor counterpart of ``synthetic.render_scene`` for the depth task.

Why: street scenes alone teach a depth model "lower in the image = nearer"; the real depth frames (NYU, TUM,
Middlebury) are rooms and close-ups: walls met at an angle, corners, furniture with legs and shelves, round
things, lamp light and shadows. The scenes are ray cast (``raycast``): a camera anywhere in the room that yaws
and pitches (no roll, so the floor stays level per image row), axis-aligned furniture built from boxes,
cylinders and spheres, textures fixed to the surfaces (planks, tiles, wood grain, fabric, books), a ceiling
lamp with hard shadows, then the street scenes' camera finish (exposure, white balance, blur, sensor noise).
Categories: floor = flat, walls and ceiling = construction, plants = nature, everything else = void.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from visionlab.data import raycast as rc
from visionlab.data.synthetic_base import CONSTRUCTION, FLAT, NATURE, Rand, Scene, finish, pal
from visionlab.data.textures import TEXTURED_SHARE, TextureBank, sample_texture

_GOLDEN = 0.6180339887498949
VOID = 0  # furniture and small objects have no street category
_WALL = pal(235, 232, 225, 220, 215, 200, 200, 205, 210, 225, 210, 185, 190, 200, 185, 240, 225, 215,
            170, 180, 190, 210, 190, 170, 150, 170, 190, 200, 160, 140)
_FLOOR = pal(150, 105, 65, 185, 145, 100, 120, 80, 50, 200, 195, 185, 120, 120, 125, 90, 95, 110, 160, 150, 130)
_WOOD = pal(160, 115, 70, 120, 80, 45, 200, 170, 130, 90, 60, 40, 230, 225, 215, 40, 40, 42, 150, 150, 155)
_FABRIC = pal(70, 80, 120, 120, 60, 60, 90, 110, 80, 180, 170, 150, 60, 60, 65, 200, 140, 90, 130, 100, 140)
_THINGS = pal(220, 60, 50, 40, 120, 200, 240, 200, 60, 60, 160, 80, 245, 245, 240, 30, 30, 35, 200, 120, 40,
              150, 80, 160, 90, 200, 200, 230, 150, 170)


class _Builder:
    """Adds furniture to a ``raycast.World`` from random draws; keeps everything clear of the camera."""

    def __init__(self, world: rc.World, r: Rand, cam: np.ndarray) -> None:
        self.w, self.r, self.cam = world, r, cam

    def mat(self, palette: np.ndarray, pattern: str = "plain", period: float = 0.3, cat: int = VOID) -> int:
        return self.w.material(rc.Material(self.r.pick(palette, 0.7, 1.1), pattern, period, cat, self.r.u(0, 10)))

    def clear(self, x0: float, z0: float, x1: float, z1: float, margin: float = 0.35) -> bool:
        cx, cz = self.cam[0], self.cam[2]
        return not (x0 - margin < cx < x1 + margin and z0 - margin < cz < z1 + margin)

    def box(self, x0, y0, z0, x1, y1, z1, mat: int) -> None:
        self.w.box((x0, y0, z0), (x1, y1, z1), mat)

    def things(self, x0: float, z0: float, x1: float, z1: float, top: float, n: int) -> None:
        """Cups, bottles, fruit, books and boxes standing on a surface at height ``top``."""
        r = self.r
        for _ in range(n):
            x, z, m = r.u(x0 + 0.05, x1 - 0.05), r.u(z0 + 0.05, z1 - 0.05), self.mat(_THINGS)
            k = r.u()
            if k < 0.4:
                rad = r.u(0.025, 0.09)
                self.w.cylinders.append((x, z, rad, top, top + r.u(0.06, 0.35), m))
            elif k < 0.65:
                rad = r.u(0.03, 0.13)
                self.w.spheres.append((x, top + rad, z, rad, m))
            else:
                sx, sz = r.u(0.05, 0.2), r.u(0.05, 0.18)
                self.box(x - sx, top, z - sz, x + sx, top + r.u(0.02, 0.3), z + sz, m)

    def table(self, x0: float, z0: float, x1: float, z1: float, top: float, n_things: int) -> None:
        m, leg = self.mat(_WOOD, "wood", self.r.u(0.2, 0.8)), self.r.u(0.03, 0.06)
        self.box(x0, top - 0.04, z0, x1, top, z1, m)
        for lx in (x0, x1 - leg):
            for lz in (z0, z1 - leg):
                self.box(lx, 0, lz, lx + leg, top - 0.04, lz + leg, m)
        self.things(x0, z0, x1, z1, top, n_things)

    def chair(self, x: float, z: float, facing: int) -> None:
        m, s, leg = self.mat(_WOOD if self.r.u() < 0.6 else _FABRIC), self.r.u(0.2, 0.25), 0.03
        seat = self.r.u(0.42, 0.5)
        self.box(x - s, seat - 0.05, z - s, x + s, seat, z + s, m)
        bz = z + facing * (s - 0.03)
        self.box(x - s, seat, min(bz, bz + facing * 0.04), x + s, seat + self.r.u(0.35, 0.55), max(bz, bz + facing * 0.04), m)
        for lx in (x - s, x + s - leg):
            for lz in (z - s, z + s - leg):
                self.box(lx, 0, lz, lx + leg, seat - 0.05, lz + leg, m)

    def shelf(self, x0: float, z0: float, x1: float, z1: float, hgt: float) -> None:
        """Open bookcase: sides, boards and rows of books of random sizes and colours."""
        m, t = self.mat(_WOOD, "wood", 0.5), 0.025
        self.box(x0, 0, z0, x0 + t, hgt, z1, m)
        self.box(x1 - t, 0, z0, x1, hgt, z1, m)
        back = z1 - t if z1 > self.cam[2] else z0
        self.box(x0, 0, back, x1, hgt, back + t, m)
        n_boards = max(2, int(hgt / self.r.u(0.3, 0.45)))
        for i in range(n_boards + 1):
            y = i * (hgt - t) / n_boards
            self.box(x0, y, z0, x1, y + t, z1, m)
            if i == n_boards or self.r.u() < 0.25:
                continue
            bx, gap = x0 + t, (hgt - t) / n_boards - t
            while bx < x1 - t - 0.05:
                bw = self.r.u(0.02, 0.07)
                self.box(bx, y + t, z0 + 0.02, min(bx + bw, x1 - t), y + t + gap * self.r.u(0.6, 0.95), z1 - 0.03,
                         self.mat(_THINGS))
                bx += bw + (self.r.u(0.05, 0.3) if self.r.u() < 0.1 else 0.002)

    def sofa(self, x0: float, z0: float, x1: float, z1: float, back_z: float) -> None:
        m = self.w.material(rc.Material(self.r.pick(_FABRIC), "fabric", 0.3, VOID, self.r.u(0, 10)))
        seat, arm = self.r.u(0.38, 0.48), 0.15
        self.box(x0, 0.0, z0, x1, seat, z1, m)
        d = 0.2 if back_z > (z0 + z1) / 2 else -0.2
        self.box(x0, seat, min(back_z, back_z - d), x1, seat + self.r.u(0.35, 0.5), max(back_z, back_z - d), m)
        for ax in (x0, x1 - arm):
            self.box(ax, seat, z0, ax + arm, seat + 0.2, z1, m)
        for _ in range(self.r.int(0, 3)):  # cushions
            cx = self.r.u(x0 + 0.3, x1 - 0.3)
            self.box(cx - 0.2, seat, min(back_z - d, back_z - 2 * d), cx + 0.2, seat + 0.35,
                     max(back_z - d, back_z - 2 * d), self.mat(_FABRIC))

    def cabinet(self, x0: float, z0: float, x1: float, z1: float, hgt: float) -> None:
        self.box(x0, 0, z0, x1, hgt, z1, self.mat(_WOOD, "wood" if self.r.u() < 0.5 else "plain", 0.4))
        if hgt < 1.2 and self.r.u() < 0.7:
            self.things(x0, z0, x1, z1, hgt, self.r.int(1, 5))

    def plant(self, x: float, z: float) -> None:
        pot, hgt = self.r.u(0.1, 0.2), self.r.u(0.2, 0.45)
        self.w.cylinders.append((x, z, pot, 0.0, hgt, self.mat(_THINGS)))
        leaf = self.w.material(rc.Material(np.float32([60, 110, 50]) * np.float32(self.r.u(0.6, 1.2)), "fabric",
                                           0.2, NATURE, self.r.u(0, 10)))
        for _ in range(self.r.int(2, 5)):
            rad = self.r.u(0.15, 0.35)
            self.w.spheres.append((x + self.r.u(-0.15, 0.15), hgt + rad + self.r.u(0, 0.5), z + self.r.u(-0.15, 0.15),
                                   rad, leaf))

    def lamp(self, x: float, z: float) -> None:
        m, hgt = self.mat(_THINGS), self.r.u(1.2, 1.7)
        self.w.cylinders.append((x, z, 0.02, 0.0, hgt, m))
        self.w.cylinders.append((x, z, self.r.u(0.15, 0.25), hgt, hgt + 0.25, self.mat(_WALL)))


def _decals(world: rc.World, r: Rand, lo: np.ndarray, hi: np.ndarray) -> None:
    """Windows, doors and pictures on the four walls."""
    for face in (0, 1, 4, 5):
        a0, a1 = (lo[2], hi[2]) if face < 2 else (lo[0], hi[0])
        for _ in range(r.int(0, 4)):
            k, u = r.u(), r.u(a0 + 0.3, a1 - 0.3)
            if k < 0.25:  # window: bright pane
                wu = r.u(0.6, 1.8)
                m = world.material(rc.Material(np.float32([225, 235, 245]) * np.float32(r.u(0.9, 1.15)), "emit"))
                world.decals.append((face, u, r.u(0.7, 1.0), u + wu, r.u(1.9, 2.3), m))
            elif k < 0.45:  # door
                m = world.material(rc.Material(r.pick(_WOOD), "wood", 0.6, VOID, r.u(0, 10)))
                world.decals.append((face, u, 0.0, u + r.u(0.75, 0.95), r.u(1.95, 2.1), m))
            else:  # picture / poster
                m = world.material(rc.Material(r.pick(_THINGS, 0.5, 1.0), "stripes" if r.u() < 0.3 else "plain",
                                               r.u(0.05, 0.2)))
                v = r.u(1.0, 1.7)
                world.decals.append((face, u, v, u + r.u(0.2, 1.0), v + r.u(0.2, 0.8), m))


def _furnish(b: _Builder, r: Rand, lo: np.ndarray, hi: np.ndarray) -> None:
    """Furniture against the walls and free-standing in the room."""
    for _ in range(r.int(4, 13)):
        kind = ("table", "shelf", "sofa", "cabinet", "chair", "plant", "lamp", "bed", "boxes")[r.int(0, 9)]
        w, d = r.u(0.6, 2.0), r.u(0.35, 1.0)
        wall = r.int(0, 5)  # 0..3: against a wall, 4: free-standing
        if wall == 0:
            x0, z0 = lo[0] + 0.01, r.u(lo[2], hi[2] - w)
            x1, z1 = x0 + d, z0 + w
        elif wall == 1:
            x1, z0 = hi[0] - 0.01, r.u(lo[2], hi[2] - w)
            x0, z1 = x1 - d, z0 + w
        elif wall == 2:
            x0, z1 = r.u(lo[0], hi[0] - w), hi[2] - 0.01
            x1, z0 = x0 + w, z1 - d
        else:
            x0, z0 = r.u(lo[0], hi[0] - w), (lo[2] + 0.01 if wall == 3 else r.u(lo[2] + 0.5, hi[2] - d - 0.3))
            x1, z1 = x0 + w, z0 + d
        if x1 <= x0 or z1 <= z0 or not b.clear(x0, z0, x1, z1):
            continue
        if kind == "table":
            b.table(x0, z0, x1, z1, r.u(0.45, 0.8), r.int(0, 6))
            if r.u() < 0.6:
                for cx in np.linspace(x0 + 0.3, x1 - 0.3, max(1, int((x1 - x0) / 0.6))):
                    cz = z0 - 0.25 if r.u() < 0.5 else z1 + 0.25
                    if b.clear(cx - 0.25, cz - 0.25, cx + 0.25, cz + 0.25):
                        b.chair(float(cx), cz, 1 if cz < z0 else -1)
        elif kind == "shelf":
            b.shelf(x0, z0, x1, z1, r.u(0.8, 2.1))
        elif kind == "sofa":
            b.sofa(x0, z0, x1, z1, z1 - 0.01 if wall != 3 else z0 + 0.01)
        elif kind == "cabinet":
            b.cabinet(x0, z0, x1, z1, r.u(0.4, 1.4))
        elif kind == "chair":
            b.chair((x0 + x1) / 2, (z0 + z1) / 2, 1 if r.u() < 0.5 else -1)
        elif kind == "plant":
            b.plant((x0 + x1) / 2, (z0 + z1) / 2)
        elif kind == "lamp":
            b.lamp((x0 + x1) / 2, (z0 + z1) / 2)
        elif kind == "boxes":  # a stack of storage boxes
            y = 0.0
            for _ in range(r.int(1, 4)):
                top, sx, sz = y + r.u(0.2, 0.5), r.u(0.0, 0.15), r.u(0.0, 0.15)
                b.box(x0 + sx, y, z0 + sz, x1 - sx, top, z1 - sz, b.mat(_THINGS if r.u() < 0.5 else _WOOD))
                x0, x1, z0, z1, y = x0 + sx, x1 - sx, z0 + sz, z1 - sz, top
        else:  # bed: a low box with a pillow
            m = b.mat(_FABRIC, "fabric")
            b.box(x0, 0, z0, x1, 0.5, z1, m)
            b.box(x0 + 0.1, 0.5, z1 - 0.4, x1 - 0.1, 0.62, z1 - 0.1, b.mat(_FABRIC))


def _world(r: Rand, closeup: bool) -> tuple[rc.World, np.ndarray, float, float]:
    """Room, camera position, yaw and pitch."""
    width, length, hgt = r.u(2.4, 7.0), r.u(2.6, 9.0), r.u(2.4, 3.2)
    lo, hi = np.float32([-width / 2, 0, 0]), np.float32([width / 2, hgt, length])
    wall = rc.Material(r.pick(_WALL, 0.8, 1.05), "stripes" if r.u() < 0.15 else "plain", r.u(0.1, 0.4),
                       CONSTRUCTION, r.u(0, 10))
    floor_kind = ("planks", "tiles", "fabric", "plain")[r.int(0, 4)]
    floor = rc.Material(r.pick(_FLOOR, 0.8, 1.1), floor_kind, r.u(0.12, 0.6), FLAT, r.u(0, 10))
    world = rc.World(lo, hi, (0, 1, 2, 3, 4, 5))
    for m in (wall, rc.Material(wall.colour, wall.pattern, wall.period, CONSTRUCTION, wall.seed), floor,
              rc.Material(np.float32([240, 240, 236]) * np.float32(r.u(0.8, 1.0)), "plain", 1, CONSTRUCTION),
              rc.Material(wall.colour, wall.pattern, wall.period, CONSTRUCTION, wall.seed),
              rc.Material(wall.colour, wall.pattern, wall.period, CONSTRUCTION, wall.seed)):
        world.material(m)
    cam = np.float32([r.u(lo[0] + 0.3, hi[0] - 0.3), r.u(0.9, 1.8), r.u(0.2, min(1.5, length / 3))])
    # look into the room (towards a point of its far half), give or take 35 degrees
    yaw = math.atan2(r.u(lo[0], hi[0]) - cam[0], r.u(length / 2, length) - cam[2]) + math.radians(r.u(-35, 35))
    pitch = math.radians(r.u(-5, 30))
    b = _Builder(world, r, cam)
    if closeup:  # a table right in front of the camera, seen from above, covered with things
        cam[1] = r.u(0.9, 1.4)
        top = cam[1] - r.u(0.25, 0.6)
        fx, fz = math.sin(yaw), math.cos(yaw)
        cx, cz = cam[0] + fx * 0.9, cam[2] + fz * 0.9
        half = r.u(0.5, 0.9)
        hi[0], hi[2] = max(hi[0], cx + half + 0.5), max(hi[2], cz + half + 0.5)
        lo[0] = min(lo[0], cx - half - 0.5)
        b.table(cx - half, cz - half, cx + half, cz + half, top, r.int(4, 12))
        pitch = math.radians(r.u(20, 50))
    _decals(world, r, lo, hi)
    _furnish(b, r, lo, hi)
    return world, cam, yaw, pitch


def is_room(seed: int, share: float) -> bool:
    """Whether synthetic scene ``seed`` is a room when a ``share`` of the scenes are rooms: a golden-ratio
    sequence, so any run of consecutive seeds holds that share (an exact split, whatever its size)."""
    return (seed * _GOLDEN) % 1.0 < share


def render_room(seed: int, height: int = 256, width: int = 512, textures: TextureBank | None = None) -> Scene:
    """Render one random indoor scene; the same (seed, height, width) gives bit-identical output. With
    ``textures`` a share of the materials are painted with real photos; geometry and depth stay the same."""
    if height < 32 or width < 32:
        raise ValueError(f"render_room needs height, width >= 32, got {height}x{width}")
    rng = np.random.default_rng(seed)
    r, arrays = Rand(rng), rng.spawn(1)[0]
    world, cam, yaw, pitch = _world(r, closeup=r.u() < 0.3)
    f = width * r.u(0.5, 1.2)  # ~45-90 deg horizontal field of view
    dirs = rc.camera_rays(height, width, f, yaw, pitch)
    depth, mat, normal, points = rc.cast(world, cam, dirs)
    mat = rc.apply_decals(world, mat, points, normal)
    light = np.float32([r.u(world.room_lo[0], world.room_hi[0]), world.room_hi[1] - 0.1,
                        r.u(world.room_lo[2] + 0.5, world.room_hi[2])])
    to_light = light[:, None] - points
    dist = np.sqrt((to_light * to_light).sum(0))
    lambert = np.maximum((normal * to_light).sum(0) / np.maximum(dist, 1e-6), 0)
    lit = lambert * ~rc.shadowed(world, points, light) / (1 + (dist / r.u(2.5, 5.0)) ** 2)
    ambient = r.u(0.3, 0.6)
    shade = ambient + (1.25 - ambient) * 1.8 * lit
    img = np.zeros((3, depth.size), np.float32)
    cats = np.zeros(depth.size, np.uint8)
    photo = np.random.default_rng([seed, 1])  # its own stream: the untextured scene is unchanged
    for i in np.unique(mat):
        m, sel = world.materials[i], mat == i
        if textures is not None and m.pattern != "emit" and photo.random() < TEXTURED_SHARE:
            a, b = rc.surface_coords(points[:, sel], normal[:, sel])
            src = textures.get(int(photo.integers(1 << 30)))
            colour = sample_texture(src, a, b, tile=float(photo.uniform(0.4, 3.0)), offset=tuple(photo.random(2)))
            img[:, sel] = colour * shade[sel][None]
        else:
            tex = rc.texture(m, points[:, sel], normal[:, sel])
            img[:, sel] = m.colour[:, None] * (tex * (1.0 if m.pattern == "emit" else shade[sel]))[None]
        cats[sel] = m.category
    grain = arrays.random(depth.size, dtype=np.float32) - 0.5
    img *= 1 + 0.06 * grain[None]
    c = SimpleNamespace(img=img.reshape(3, height, width), depth=depth.reshape(height, width), h=height, w=width,
                        hor_col=img.reshape(3, height, width)[:, height // 2, width // 2].copy())
    return Scene(finish(c, arrays, r), cats.reshape(height, width), depth.reshape(height, width).astype(np.float32))
