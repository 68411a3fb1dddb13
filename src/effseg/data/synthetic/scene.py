"""One synthetic street scene: the street layout, then background, objects and camera effects.

``Scene(rng, Size(h, w), force)`` draws everything in its constructor from the one generator
``rng`` (the order of random draws fixes the image: same seed, same pixels).
:func:`make_scene` retries with derived seeds until the forced rare classes are visible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from effseg.data.synthetic.background import BackgroundMixin, Plane, noise_texture
from effseg.data.synthetic.camera import CameraMixin
from effseg.data.synthetic.labels import RARE_IDS
from effseg.data.synthetic.objects import ObjectsMixin
from effseg.data.synthetic.road_users import RoadUsersMixin
from effseg.size import Size


class Scene(BackgroundMixin, ObjectsMixin, RoadUsersMixin, CameraMixin):
    """One rendered scene: build with a seed, then ``image`` (uint8 RGB) and ``label`` (uint8)."""

    def __init__(self, rng: np.random.Generator, size: Size, force: Sequence[str] = ()) -> None:
        self.rng = rng
        self.H, self.W = size
        self.force = set(force)
        r = rng
        W, H = self.W, self.H
        # camera
        self.f = W * r.uniform(0.62, 0.9)
        self.cx = W / 2 + r.uniform(-0.06, 0.06) * W
        self.y0 = H * r.uniform(0.40, 0.50)
        self.hc = r.uniform(1.3, 1.75)
        self.near = 1.0
        # light
        self.sun = r.uniform(0.75, 1.25)
        self.cast = np.array([r.uniform(0.9, 1.1), 1.0, r.uniform(0.9, 1.1)], np.float32)
        self.overcast = r.random() < 0.35
        sky_top = np.array([r.uniform(40, 90), r.uniform(100, 150), r.uniform(170, 235)], np.float32)
        if self.overcast:
            g = r.uniform(150, 215)
            sky_top = np.array([g, g + 4, g + 10], np.float32)
        self.sky_top = sky_top
        self.haze = np.clip(sky_top * 0.5 + r.uniform(90, 130), 0, 255).astype(np.float32)
        self.haze_dist = r.uniform(70, 220)
        self.tex = noise_texture(r)
        self.tex2 = noise_texture(r)
        self.img = np.zeros((H, W, 3), np.float32)
        self.lab = np.full((H, W), 255, np.uint8)
        self._layout()
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # rays that miss a plane
            self._background()
        self._objects()
        self._finish()

    # ------------------------------------------------------------------ layout
    def _layout(self) -> None:
        r = self.rng
        self.lane_w = r.uniform(2.9, 3.6)
        n_left, n_right = int(r.integers(1, 3)), int(r.integers(1, 3))
        self.road_l = -n_left * self.lane_w + r.uniform(-0.8, 0.8)
        self.road_r = self.road_l + (n_left + n_right) * self.lane_w
        self.side_l, self.side_r = r.uniform(1.8, 5.0), r.uniform(1.8, 5.0)
        want_terrain = "terrain" in self.force or r.random() < 0.4
        self.terr_l = r.uniform(1.0, 4.0) if want_terrain and r.random() < 0.7 else 0.0
        self.terr_r = r.uniform(1.0, 4.0) if want_terrain and (self.terr_l == 0 or r.random() < 0.5) else 0.0
        self.front_l = self.road_l - self.side_l - self.terr_l
        self.front_r = self.road_r + self.side_r + self.terr_r
        self.z_end = r.uniform(55, 160)
        self.crossing = (r.uniform(14, 45), r.uniform(8, 14)) if r.random() < 0.45 else None
        # road colours overlap on purpose across images
        g = r.uniform(65, 135)
        self.c_road = np.array([g, g * r.uniform(0.97, 1.02), g * r.uniform(0.98, 1.08)], np.float32)
        g2 = g * r.uniform(0.85, 1.45)
        tint = r.choice([0, 1, 2], p=[0.6, 0.25, 0.15])
        self.c_side = np.array([g2, g2, g2], np.float32) * (
            [1, 1, 1] if tint == 0 else [1.12, 0.95, 0.9] if tint == 1 else [1.0, 1.0, 0.92]
        )
        self.c_terr = np.array(
            [r.uniform(70, 150), r.uniform(85, 160), r.uniform(35, 85)], np.float32
        )  # grass..dirt
        self.c_veg = np.array([r.uniform(35, 90), r.uniform(60, 125), r.uniform(20, 60)], np.float32)
        shade_l = 1.0 if r.random() < 0.5 else r.uniform(0.55, 0.8)
        shade_r = r.uniform(0.55, 0.8) if shade_l == 1.0 else 1.0
        self.shade_l, self.shade_r = shade_l, shade_r
        force_side = {k: bool(r.random() < 0.5) for k in ("wall", "fence")}
        self.planes = [
            self._side_plane(self.front_l, shade_l, True, force_side),
            self._side_plane(self.front_r, shade_r, False, force_side),
            self._side_plane(self.front_l - r.uniform(12, 35), shade_l, None, {}),
            self._side_plane(self.front_r + r.uniform(12, 35), shade_r, None, {}),
            self._end_plane(),
        ]

    def _facade_color(self) -> np.ndarray:
        r = self.rng
        choice = r.integers(0, 6)
        if choice == 0:  # grey concrete
            g = r.uniform(90, 190)
            return np.array([g, g, g * r.uniform(0.95, 1.05)], np.float32)
        if choice == 1:  # brick
            return np.array([r.uniform(120, 170), r.uniform(60, 90), r.uniform(45, 70)], np.float32)
        if choice == 2:  # beige / sand
            return np.array([r.uniform(180, 225), r.uniform(160, 205), r.uniform(120, 170)], np.float32)
        if choice == 3:  # white
            g = r.uniform(190, 235)
            return np.array([g, g, g * 0.97], np.float32)
        if choice == 4:  # pastel
            base = r.uniform(150, 220, 3)
            return base.astype(np.float32)
        g = r.uniform(55, 100)  # dark
        return np.array([g, g * 1.02, g * 1.08], np.float32)

    def _segments(self, length: float, kinds_p: dict[str, float], force: Sequence[str], far: bool):
        r = self.rng
        names = list(kinds_p)
        p = np.array([kinds_p[k] for k in names])
        p = p / p.sum()
        edges, kinds, heights, colors, params = [r.uniform(-6, 0)], [], [], [], []
        forced = list(force)
        while edges[-1] < length:
            if forced and edges[-1] > r.uniform(3, 18):
                kind = forced.pop()
            else:
                kind = names[r.choice(len(names), p=p)]
            if kind == "building":
                seg_len = r.uniform(8, 28) * (1.5 if far else 1.0)
                h = r.uniform(7, 26)
                col = self._facade_color()
            elif kind == "wall":
                seg_len, h = r.uniform(6, 20), r.uniform(0.8, 2.8)
                g = r.uniform(100, 190)
                col = np.array([g, g * r.uniform(0.95, 1.03), g * r.uniform(0.9, 1.05)], np.float32)
            elif kind == "fence":
                seg_len, h = r.uniform(6, 20), r.uniform(0.9, 2.2)
                col = (
                    np.array([r.uniform(40, 110)] * 3, np.float32)
                    if r.random() < 0.6
                    else np.array([r.uniform(110, 160), r.uniform(80, 110), r.uniform(50, 75)], np.float32)
                )
            elif kind == "hedge":
                seg_len, h = r.uniform(5, 15), r.uniform(1.0, 2.5)
                col = self.c_veg * r.uniform(0.8, 1.2)
            elif kind == "trees":
                seg_len, h = r.uniform(8, 30), r.uniform(6, 16)
                col = self.c_veg * r.uniform(0.75, 1.15)
            else:
                seg_len, h, col = r.uniform(4, 12), 0.0, np.zeros(3, np.float32)
            edges.append(edges[-1] + seg_len)
            kinds.append(Plane.KINDS[kind])
            heights.append(h)
            colors.append(col)
            su = r.uniform(2.2, 4.0)
            sv = r.uniform(2.9, 3.6)
            params.append(
                [su, sv, r.uniform(0.3, 0.65), r.uniform(0.35, 0.6), r.uniform(3.0, 4.5), r.random()]
            )
        return edges, kinds, heights, colors, params

    def _side_plane(self, pos: float, shade: float, left: bool | None, force_side: dict) -> Plane:
        far = left is None
        kinds_p = (
            {"building": 0.6, "trees": 0.3, "none": 0.1}
            if far
            else {"building": 0.62, "wall": 0.08, "fence": 0.08, "hedge": 0.1, "trees": 0.04, "none": 0.08}
        )
        force = [] if far else [k for k in ("wall", "fence") if k in self.force and force_side[k] == left]
        edges, kinds, heights, colors, params = self._segments(self.z_end + 10, kinds_p, force, far)
        if self.crossing is not None and not far:
            z0, w = self.crossing
            edges, kinds, heights, colors, params = self._cut(
                edges, kinds, heights, colors, params, z0 - 1, z0 + w
            )
        return Plane("x", pos, edges, kinds, heights, colors, params, shade)

    @staticmethod
    def _cut(edges, kinds, heights, colors, params, a, b):
        """Insert an empty segment [a, b) (the cross street)."""
        pieces = []
        for i in range(len(kinds)):
            lo, hi = edges[i], edges[i + 1]
            for s0, s1, empty in (
                (lo, min(hi, a), False),
                (max(lo, a), min(hi, b), True),
                (max(lo, b), hi, False),
            ):
                if s1 > s0:
                    pieces.append(
                        (s1, 0 if empty else kinds[i], 0.0 if empty else heights[i], colors[i], params[i])
                    )
        e2 = [edges[0]] + [pc[0] for pc in pieces]
        return (
            e2,
            [pc[1] for pc in pieces],
            [pc[2] for pc in pieces],
            [pc[3] for pc in pieces],
            [pc[4] for pc in pieces],
        )

    def _end_plane(self) -> Plane:
        width = 2 * self.z_end * self.W / self.f + 40
        edges, kinds, heights, colors, params = self._segments(
            width, {"building": 0.65, "trees": 0.35}, [], True
        )
        edges = np.asarray(edges) - width / 2
        return Plane("z", self.z_end, edges, kinds, heights, colors, params, 0.9)


def make_scene(seed: int | Sequence[int], size: Size, force: Sequence[str]) -> Scene:
    """Render with ``seed``; if a forced class ended up hidden (occluded, off-screen), re-render
    with the derived seeds ``(*seed, 1)``, ``(*seed, 2)``, ... (deterministic, at most 6 tries)."""
    base = [int(s) for s in np.atleast_1d(seed)]
    scene = None
    for attempt in range(6):
        scene = Scene(np.random.default_rng(base + [attempt] if attempt else base), size, force)
        present = np.bincount(scene.lab.ravel(), minlength=256) > 0
        if all(present[RARE_IDS[name]] for name in force):
            break
    return scene
