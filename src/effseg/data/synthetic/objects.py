"""Street furniture of a synthetic scene and where everything goes.

:meth:`ObjectsMixin._objects` places vehicles, people, riders, poles, lamps, signs, traffic
lights, trees and clutter along the street and draws them far to near (painter's order, hence
occlusion); the vehicles and people themselves are in
:mod:`effseg.data.synthetic.road_users`. Part of :class:`effseg.data.synthetic.scene.Scene`.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from effseg.data.synthetic.camera import ONE, SHIFT
from effseg.data.synthetic.labels import EGO_MARK, LIGHT, POLE, SIGN, STATIC_MARK, VEG


class ObjectsMixin:
    """Object placement, paint colours, poles (lamps, signs, traffic lights), trees, clutter, the ego hood."""

    # ------------------------------------------------------------------ objects
    def _objects(self) -> None:
        r = self.rng
        self.sun_obj = self.sun
        items: list[tuple[float, Callable[[], None]]] = []
        zmax = min(self.z_end - 5, 90)
        lanes = np.arange(self.road_l + self.lane_w / 2, self.road_r, self.lane_w)
        f = self.force

        def add(z, fn, *args):
            items.append((z, lambda: fn(*args)))

        # vehicles: an outer lane may be a parking lane; lanes hold non-overlapping traffic
        parked = {side: bool(len(lanes) > 1 and r.random() < 0.5) for side in (-1, 1)}
        traffic = [
            lane
            for i, lane in enumerate(lanes)
            if not (i == 0 and parked[-1]) and not (i == len(lanes) - 1 and parked[1])
        ]
        if not traffic:
            traffic = list(lanes)
        occupied: list[tuple[float, float, float]] = []

        def place(kind: str, x: float, z: float, length: float) -> bool:
            if any(abs(x - ox) < 2.2 and z < o1 + 1.5 and z + length > o0 - 1.5 for ox, o0, o1 in occupied):
                return False
            occupied.append((x, z, z + length))
            add(z, self.vehicle, kind, x, z)
            return True

        if "train" in f or r.random() < 0.12:
            place("train", (self.road_l + self.road_r) / 2, r.uniform(12, 35), 30)
        for kind in ("truck", "bus"):
            if kind in f:
                for attempt in range(12):
                    z = r.uniform(10, 30) if attempt < 6 else r.uniform(30, 50)
                    if place(kind, r.choice(traffic) + r.uniform(-0.2, 0.2), z, 14):
                        break
                else:  # no free slot: overlap is better than a missing class
                    occupied.append((lanes[0], 12.0, 26.0))
                    add(12.0, self.vehicle, kind, lanes[0], 12.0)
        for lane in traffic:
            z = r.uniform(9, 22) if abs(lane) < self.lane_w / 2 else r.uniform(5, 16)
            while z < zmax:
                kind = r.choice(["car", "truck", "bus"], p=[0.88, 0.07, 0.05])
                place(kind, lane + r.uniform(-0.25, 0.25), z, 14 if kind != "car" else 5)
                z += r.uniform(8, 35)
        for side in (-1, 1):
            if parked[side]:
                z = r.uniform(4, 12)
                x = (self.road_l + 1.15) if side < 0 else (self.road_r - 1.15)
                while z < zmax * 0.7:
                    place("car", x, z, 5)
                    z += r.uniform(5.2, 8) if r.random() < 0.75 else r.uniform(14, 30)
        # people on sidewalks and crossing
        n_people = int(r.integers(3, 16))
        for _ in range(n_people):
            side = r.choice([-1, 1])
            x = (
                r.uniform(self.road_l - self.side_l + 0.3, self.road_l - 0.3)
                if side < 0
                else r.uniform(self.road_r + 0.3, self.road_r + self.side_r - 0.3)
            )
            z = r.uniform(3, zmax * 0.8)
            add(z, self.person, x, z, None)
        if self.crossing is not None:
            z0, _ = self.crossing
            for _ in range(int(r.integers(0, 5))):
                add(z := z0 - r.uniform(1.5, 4), self.person, r.uniform(self.road_l, self.road_r), z, None)
        # riders
        for kind in ("bicycle", "motorcycle"):
            n = 2 * int(kind in f) + int(r.random() < 0.35)
            for _ in range(n):
                along = r.random() < 0.6
                x = (
                    (self.road_r - r.uniform(0.6, 1.4))
                    if kind == "bicycle"
                    else r.choice(lanes) + r.uniform(-0.8, 0.8)
                )
                z = r.uniform(5, 20)
                add(z, self.rider, kind, x, z, along)
        # parked bicycles on the sidewalks (no rider), often several in a row
        if "bicycle" in f or r.random() < 0.3:
            side = r.choice([-1, 1])
            x = self.road_l - r.uniform(0.4, 1.2) if side < 0 else self.road_r + r.uniform(0.4, 1.2)
            z = r.uniform(4, 15)
            for k in range(int(r.integers(1, 5))):
                add(z + 0.6 * k, self.rider, "bicycle", x + r.uniform(-0.1, 0.1), z + 0.6 * k, False, False)
        # poles, lamps, signs, lights along both curbs
        for side in (-1, 1):
            x = self.road_l - 0.5 if side < 0 else self.road_r + 0.5
            z = r.uniform(3, 12)
            while z < zmax:
                what = r.choice(
                    ["lamp", "sign", "light", "pole", "tree", "tree"], p=[0.25, 0.2, 0.12, 0.13, 0.15, 0.15]
                )
                xx = x + side * r.uniform(0, 0.6)
                if what == "tree":
                    add(z, self.tree, x + side * r.uniform(0.3, 1.5), z)
                else:
                    add(z, self.pole, what, xx, z, side)
                z += r.uniform(7, 22)
        # guarantee signs and lights near the camera (they are small)
        add(zs := r.uniform(8, 25), self.pole, "sign", self.road_r + 0.4, zs, 1)
        add(zl := r.uniform(10, 30), self.pole, "light", self.road_l - 0.4, zl, -1)
        # trees on terrain strips
        for side, w in ((-1, self.terr_l), (1, self.terr_r)):
            if w > 0:
                for _ in range(int(r.integers(0, 5))):
                    edge = self.road_l - self.side_l if side < 0 else self.road_r + self.side_r
                    add(z := r.uniform(6, zmax), self.tree, edge + side * r.uniform(0.3, w), z)
        # static clutter (void: bins, bollards) -> ignored in training, like Cityscapes' "static"
        for _ in range(int(r.integers(0, 4))):
            side = r.choice([-1, 1])
            x = (
                (self.road_l - r.uniform(0.3, self.side_l))
                if side < 0
                else (self.road_r + r.uniform(0.3, self.side_r))
            )
            add(z := r.uniform(4, 40), self.clutter, x, z)
        for _z, fn in sorted(items, key=lambda it: -it[0]):
            fn()
        if r.random() < 0.4:
            self.ego_hood()

    def _paint(self) -> np.ndarray:
        r = self.rng
        k = r.integers(0, 9)
        if k < 3:  # grey / silver / black / white
            g = r.choice([r.uniform(25, 60), r.uniform(90, 150), r.uniform(170, 235)])
            return np.array([g, g, g * r.uniform(0.97, 1.06)], np.float32)
        return (r.uniform(20, 220, 3)).astype(np.float32)

    def pole(self, what: str, x: float, z: float, side: int) -> None:
        r = self.rng
        if z <= self.near:
            return
        metal = np.array([r.uniform(70, 160)] * 3, np.float32) * [1, 1, 1.03]
        height = {
            "lamp": r.uniform(6, 9),
            "sign": r.uniform(2.4, 3.2),
            "light": r.uniform(3.0, 4.2),
            "pole": r.uniform(3, 7),
        }[what]
        w = r.uniform(0.08, 0.16) if what != "lamp" else r.uniform(0.14, 0.22)
        self._bar(x - w / 2, x + w / 2, 0, height, z, metal, POLE)
        if what == "lamp":
            arm = -side * r.uniform(1.0, 2.5)
            a0, a1 = sorted((x, x + arm))
            self._bar(a0, a1, height - 0.12, height, z, metal, POLE)
            hx = x + arm
            self.poly(
                self.P(
                    [hx - 0.35, hx + 0.35, hx + 0.25, hx - 0.25],
                    [height - 0.25, height - 0.25, height, height],
                    [z] * 4,
                ),
                metal * 0.7,
                POLE,
                z,
            )
        elif what == "sign":
            cy = height - 0.35
            shape = r.integers(0, 4)
            sz = r.uniform(0.3, 0.45)
            if shape == 0:  # round, red ring
                u, v = self.ellipse_pts(x, cy, sz, sz, 20)
                self.poly(self.P(u, v, z - 0.02), [200, 25, 30], SIGN, z)
                u, v = self.ellipse_pts(x, cy, sz * 0.75, sz * 0.75, 20)
                self.poly(self.P(u, v, z - 0.03), [235, 235, 235], SIGN, z)
            elif shape == 1:  # triangle
                self.poly(
                    self.P(
                        [x - sz, x + sz, x], [cy - sz * 0.8, cy - sz * 0.8, cy + sz * 0.9], [z - 0.02] * 3
                    ),
                    [210, 30, 30],
                    SIGN,
                    z,
                )
                self.poly(
                    self.P(
                        [x - sz * 0.7, x + sz * 0.7, x],
                        [cy - sz * 0.6, cy - sz * 0.6, cy + sz * 0.5],
                        [z - 0.03] * 3,
                    ),
                    [240, 240, 235],
                    SIGN,
                    z,
                )
            elif shape == 2:  # blue round / square
                u, v = self.ellipse_pts(x, cy, sz, sz, 20)
                self.poly(self.P(u, v, z - 0.02), [30, 70, 170], SIGN, z)
            else:  # rectangle, yellow or white or blue
                col = [[230, 190, 30], [235, 235, 235], [30, 80, 160]][r.integers(0, 3)]
                self.poly(
                    self.P(
                        [x - sz * 1.2, x + sz * 1.2, x + sz * 1.2, x - sz * 1.2],
                        [cy - sz * 0.6] * 2 + [cy + sz * 0.6] * 2,
                        [z - 0.02] * 4,
                    ),
                    col,
                    SIGN,
                    z,
                )
            if r.random() < 0.3:  # a second, lower sign
                self.poly(
                    self.P(
                        [x - 0.25, x + 0.25, x + 0.25, x - 0.25],
                        [cy - 0.9, cy - 0.9, cy - 0.55, cy - 0.55],
                        [z - 0.02] * 4,
                    ),
                    [235, 235, 235],
                    SIGN,
                    z,
                )
        elif what == "light":
            housings = [(x, height)]
            if r.random() < 0.5:  # mast arm over the road with a second light
                arm = -side * r.uniform(2.0, 4.5)
                a0, a1 = sorted((x, x + arm))
                self._bar(a0, a1, height + 0.8, height + 0.95, z, metal, POLE)
                housings.append((x + arm, height + 0.8))
            for hx, hy in housings:
                bw, bh = 0.34, 0.95
                self.box(hx - bw / 2, hx + bw / 2, hy - bh, hy, z - 0.3, z, [30, 32, 30], LIGHT)
                lit = r.integers(0, 3)
                for i, lamp in enumerate([[230, 30, 20], [240, 170, 20], [40, 220, 90]]):
                    ly = hy - 0.17 - i * 0.3
                    u, v = self.ellipse_pts(hx, ly, 0.1, 0.1, 12)
                    self.poly(self.P(u, v, z - 0.31), np.array(lamp) * (1.0 if i == lit else 0.3), LIGHT, z)

    def _bar(self, x0, x1, y0, y1, z, color, cls) -> None:
        """A fronto-parallel rectangle at least one pixel wide/high (thin poles stay visible)."""
        p = self.P([x0, x1], [y1, y0], [z, z])
        (ax, ay), (bx, by) = p
        if bx - ax < 1.0:
            c = (ax + bx) / 2
            ax, bx = c - 0.5, c + 0.5
        if by - ay < 1.0:
            c = (ay + by) / 2
            ay, by = c - 0.5, c + 0.5
        pts = np.array([[ax, ay], [bx, ay], [bx, by], [ax, by]])
        self.poly(pts, color, cls, z)

    def tree(self, x: float, z: float) -> None:
        r = self.rng
        if z <= self.near:
            return
        trunk_h, crown = r.uniform(2.0, 3.5), r.uniform(1.3, 2.8)
        bark = np.array([r.uniform(50, 100), r.uniform(40, 80), r.uniform(30, 60)], np.float32)
        tw = r.uniform(0.15, 0.35)
        self._bar(x - tw / 2, x + tw / 2, 0, trunk_h + crown * 0.5, z, bark, VEG)
        cy = trunk_h + crown
        base = self.c_veg * r.uniform(0.75, 1.2)
        for _ in range(int(r.integers(10, 22))):
            du, dv = r.normal(0, crown * 0.45, 2)
            rr = crown * r.uniform(0.35, 0.65)
            u, v = self.ellipse_pts(x + du, cy + dv, rr, rr * r.uniform(0.7, 1.1), 14)
            self.poly(self.P(u, v, z + r.uniform(-0.5, 0.5)), base * r.uniform(0.6, 1.35), VEG, z)

    def clutter(self, x: float, z: float) -> None:
        r = self.rng
        w, h = r.uniform(0.3, 0.8), r.uniform(0.5, 1.1)
        self.box(x - w / 2, x + w / 2, 0, h, z, z + w, r.uniform(30, 160, 3), STATIC_MARK)

    def ego_hood(self) -> None:
        W, H = self.W, self.H
        top = H * self.rng.uniform(0.88, 0.95)
        pts = np.array(
            [[0, H], [0, top + 0.05 * H], [W * 0.3, top], [W * 0.7, top], [W, top + 0.05 * H], [W, H]],
            np.float64,
        )
        ip = np.round(pts * ONE).astype(np.int32).reshape(-1, 1, 2)
        c = self._paint() * 0.5
        cv2.fillPoly(self.img, [ip], c.tolist(), lineType=cv2.LINE_AA, shift=SHIFT)
        cv2.fillPoly(self.lab, [ip], EGO_MARK, shift=SHIFT)
