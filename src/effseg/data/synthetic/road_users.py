"""Road users of a synthetic scene: cars, trucks, buses, trams, people and riders.

Drawn as projected 3-D boxes and profiles through the scene's camera
(:class:`~effseg.data.synthetic.camera.CameraMixin`). Part of
:class:`effseg.data.synthetic.scene.Scene`.
"""

from __future__ import annotations

import cv2
import numpy as np

from effseg.data.synthetic.camera import ONE, SHIFT
from effseg.data.synthetic.labels import BICYCLE, BUS, CAR, MOTORCYCLE, PERSON, RIDER, ROAD, TRAIN, TRUCK


class RoadUsersMixin:
    """Vehicles (``car``, ``truck``, ``bus``, ``train``), people and riders on bicycles and motorcycles."""

    def _livery(self, green: tuple[float, float]) -> np.ndarray:
        """A bus's or train's RGB paint: half of them the common car paints, the others a
        yellow-to-red livery whose green channel is drawn from ``green``."""
        r = self.rng
        if r.random() < 0.5:
            return self._paint()
        return np.array([r.uniform(180, 240), r.uniform(*green), 40], np.float32)

    def vehicle(self, kind: str, xc: float, z: float) -> None:
        r = self.rng
        if kind == "car":
            w, L, h = r.uniform(1.65, 1.95), r.uniform(3.8, 4.9), r.uniform(1.35, 1.65)
            cls, paint = CAR, self._paint()
        elif kind == "truck":
            w, L, h = r.uniform(2.2, 2.5), r.uniform(6.5, 10), r.uniform(2.9, 3.8)
            cls = TRUCK
            paint = np.array([r.uniform(150, 240)] * 3, np.float32) if r.random() < 0.6 else self._paint()
        elif kind == "bus":
            w, L, h = 2.5, r.uniform(11, 14), r.uniform(2.9, 3.2)
            cls, paint = BUS, self._livery((150, 220))
        else:
            w, L, h = 2.4, r.uniform(22, 32), r.uniform(3.2, 3.5)
            cls, paint = TRAIN, self._livery((30, 70))
        x0, x1 = xc - w / 2, xc + w / 2
        z1 = z + L
        glass = np.array([30, 38, 48], np.float32) * r.uniform(0.8, 1.6)
        # contact shadow
        self.darken(
            self.P([x0 - 0.1, x1 + 0.1, x1 + 0.1, x0 - 0.1], [0] * 4, [z - 0.1, z - 0.1, z1, z1]), 0.55
        )
        if kind == "train":  # rails in the road under the tram
            for rx in (xc - 0.72, xc + 0.72):
                self.poly(
                    self.P([rx - 0.04, rx + 0.04, rx + 0.04, rx - 0.04], [0] * 4, [z - 30, z - 30, z1, z1])
                    if z > 31
                    else self.P(
                        [rx - 0.04, rx + 0.04, rx + 0.04, rx - 0.04],
                        [0] * 4,
                        [max(z - 30, 1.5)] * 2 + [z1] * 2,
                    ),
                    [140, 140, 150],
                    ROAD,
                    z,
                )
        wheel_r = 0.33 if kind == "car" else 0.5
        side_x = x1 if x1 < 0 else (x0 if x0 > 0 else None)
        if kind == "car":
            self.box(x0, x1, 0.28, 0.62 * h, z, z1, paint, cls)
            cz0, cz1 = z + 0.15 * L, z + 0.78 * L
            self.box(x0 + 0.12, x1 - 0.12, 0.62 * h, h, cz0, cz1, paint, cls, side_shade=0.8)
            # glass on the back and side of the cabin
            if cz0 > self.near:
                self.poly(
                    self.P(
                        [x0 + 0.22, x1 - 0.22, x1 - 0.3, x0 + 0.3], [0.65 * h] * 2 + [0.95 * h] * 2, [cz0] * 4
                    ),
                    glass,
                    cls,
                    cz0,
                )
                if side_x is not None:
                    sx = x1 - 0.12 if side_x < 0 else x0 + 0.12
                    self.poly(
                        self.P(
                            [sx] * 4,
                            [0.66 * h, 0.66 * h, 0.95 * h, 0.95 * h],
                            [cz0 + 0.2, cz1 - 0.2, cz1 - 0.35, cz0 + 0.35],
                        ),
                        glass,
                        cls,
                        cz0,
                        0.9,
                    )
            # lights and plate on the back
            for lx in (x0 + 0.12, x1 - 0.38):
                self.poly(
                    self.P([lx, lx + 0.26, lx + 0.26, lx], [0.5 * h] * 2 + [0.58 * h] * 2, [z - 0.01] * 4),
                    [200, 30, 30],
                    cls,
                    z,
                )
            self.poly(
                self.P([xc - 0.25, xc + 0.25, xc + 0.25, xc - 0.25], [0.35] * 2 + [0.47] * 2, [z - 0.01] * 4),
                [220, 220, 215],
                cls,
                z,
            )
        else:
            self.box(x0, x1, 0.35, h, z, z1, paint, cls)
            if side_x is not None and kind in ("bus", "train"):
                n = int(L / 1.6)
                for i in range(1, n):
                    a = z + i * 1.6 - 1.3
                    self.poly(
                        self.P([side_x] * 4, [1.2, 1.2, h - 0.6, h - 0.6], [a, a + 1.3, a + 1.3, a]),
                        glass,
                        cls,
                        a,
                        0.9,
                    )
            if z > self.near:
                if kind in ("bus", "train"):
                    self.poly(
                        self.P(
                            [x0 + 0.15, x1 - 0.15, x1 - 0.15, x0 + 0.15],
                            [1.3, 1.3, h - 0.35, h - 0.35],
                            [z - 0.01] * 4,
                        ),
                        glass,
                        cls,
                        z,
                    )
                else:
                    self.poly(
                        self.P(
                            [x0 + 0.1, x1 - 0.1, x1 - 0.1, x0 + 0.1], [0.9] * 2 + [0.96] * 2, [z - 0.01] * 4
                        ),
                        [60, 60, 60],
                        cls,
                        z,
                    )
            if kind == "train":  # pantograph
                for dz in (0.0, 0.9):
                    self.poly(
                        self.P(
                            [xc - 0.05, xc + 0.05, xc + 0.6, xc + 0.5],
                            [h, h, h + 0.9, h + 0.9],
                            [z + L / 2 + dz] * 4,
                        ),
                        [40, 40, 40],
                        cls,
                        z,
                    )
        # wheels
        if side_x is not None:
            for wz in (z + 0.8, z1 - 0.8) if kind == "car" else (z + 1.2, z + 2.6, z1 - 1.5):
                u, v = self.ellipse_pts(0.0, wheel_r, wheel_r, wheel_r)
                self.poly(self.profile(side_x, wz, True, u, v), [22, 22, 24], cls, wz)
        if z > self.near:
            for wx in (x0 + 0.05, x1 - 0.3):
                self.poly(
                    self.P([wx, wx + 0.25, wx + 0.25, wx], [0, 0, 0.3, 0.3], [z + 0.6] * 4),
                    [20, 20, 22],
                    cls,
                    z,
                )

    def person(self, x: float, z: float, pose: str | None, cls: int = PERSON, h: float | None = None) -> None:
        r = self.rng
        h = h or r.uniform(1.5, 1.92)
        skin = np.array([r.uniform(120, 235), r.uniform(85, 190), r.uniform(60, 160)], np.float32)
        shirt, pants = self._cloth(), self._cloth() * 0.7
        stride = r.uniform(-0.18, 0.18)
        if pose != "ride":
            for s in (-1, 1):  # legs
                lx = x + s * 0.09
                self.poly(
                    self.P(
                        [lx - 0.07, lx + 0.07, lx + 0.07 + s * stride * 0.3, lx - 0.07 + s * stride * 0.3],
                        [0.47 * h, 0.47 * h, 0, 0],
                        [z] * 4,
                    ),
                    pants,
                    cls,
                    z,
                )
            hip = 0.47 * h
        else:
            hip = 1.0
            for s in (-1, 1):
                self.poly(
                    self.P(
                        [x + s * 0.1 - 0.06, x + s * 0.1 + 0.06, x + s * 0.12 + 0.06, x + s * 0.12 - 0.06],
                        [hip, hip, 0.45, 0.45],
                        [z] * 4,
                    ),
                    pants,
                    cls,
                    z,
                )
        top = hip + 0.36 * h
        self.poly(
            self.P([x - 0.16, x + 0.16, x + 0.21, x - 0.21], [hip, hip, top, top], [z] * 4), shirt, cls, z
        )
        for s in (-1, 1):  # arms
            ax = x + s * 0.22
            self.poly(
                self.P(
                    [ax - 0.05, ax + 0.05, ax + 0.05 + s * 0.03, ax - 0.05 + s * 0.03],
                    [top, top, top - 0.33 * h, top - 0.33 * h],
                    [z] * 4,
                ),
                shirt * 0.9,
                cls,
                z,
            )
        u, v = self.ellipse_pts(x, top + 0.12, 0.085, 0.12)
        self.poly(self.P(u, v, z), skin if r.random() < 0.7 else self._cloth(), cls, z)
        if r.random() < 0.3:  # bag
            self.poly(
                self.P(
                    [x + 0.2, x + 0.38, x + 0.38, x + 0.2], [hip, hip, hip + 0.3, hip + 0.3], [z - 0.02] * 4
                ),
                self._cloth(),
                cls,
                z,
            )

    def _cloth(self) -> np.ndarray:
        r = self.rng
        if r.random() < 0.6:
            g = r.uniform(15, 90)
            return np.array([g, g, g * r.uniform(0.9, 1.3)], np.float32)
        return r.uniform(30, 230, 3).astype(np.float32)

    def rider(self, kind: str, x: float, z: float, along: bool, ridden: bool = True) -> None:
        r = self.rng
        cls = BICYCLE if kind == "bicycle" else MOTORCYCLE
        wr = 0.34 if kind == "bicycle" else 0.31
        base = 1.05 if kind == "bicycle" else 1.35
        dark = np.array([r.uniform(15, 60)] * 3, np.float32)
        frame = self._paint() if kind == "bicycle" else self._paint() * 0.8
        s = self.f / z
        thick = max(1, int(round((0.035 if kind == "bicycle" else 0.09) * s)))
        for cu in (0.0, base):
            u, v = self.ellipse_pts(cu, wr, wr, wr, 20)
            pts = self.profile(x, z, along, u, v)
            if not np.all(np.isfinite(pts)):
                return
            ip = np.round(pts * ONE).astype(np.int32).reshape(-1, 1, 2)
            c = self._haze(dark, z).tolist()
            if kind == "motorcycle":
                cv2.fillPoly(self.img, [ip], c, lineType=cv2.LINE_AA, shift=SHIFT)
                cv2.fillPoly(self.lab, [ip], cls, shift=SHIFT)
            else:
                cv2.polylines(self.img, [ip], True, c, thick, lineType=cv2.LINE_AA, shift=SHIFT)
                cv2.polylines(self.lab, [ip], True, cls, thick, shift=SHIFT)
        if kind == "bicycle":
            fu = [0.0, 0.45, 0.95, base, 0.95, 0.4, 0.45]
            fv = [wr, wr, 0.85, wr, 0.85, 0.82, wr]
            pts = self.profile(x, z, along, fu, fv)
            ip = np.round(pts * ONE).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(
                self.img,
                [ip],
                False,
                self._haze(frame, z).tolist(),
                thick,
                lineType=cv2.LINE_AA,
                shift=SHIFT,
            )
            cv2.polylines(self.lab, [ip], False, cls, thick, shift=SHIFT)
        else:
            u = [0.1, base - 0.1, base - 0.05, 0.75, 0.3, 0.05]
            v = [0.35, 0.35, 0.85, 0.95, 0.8, 0.6]
            self.poly(self.profile(x, z, along, u, v), frame, cls, z)
        if ridden:
            mid = base / 2
            px, pz = (x, z + mid) if along else (x + mid, z)
            self.person(px, pz - 0.01, "ride", cls=RIDER, h=r.uniform(1.55, 1.85))
