"""A synthetic city: street scenes with pixel-exact labels, no download needed.

:func:`generate_city` writes the Cityscapes layout with *label ids*, so the scenes go
through exactly the loader used for real data::

    <out>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    <out>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

How a scene is made (all numpy/OpenCV, vectorised over pixels):

* a pinhole camera 1.3-1.7 m above a flat street; every background pixel is ray-cast
  against the ground plane, the two building-front planes, two backdrop planes behind
  gaps and an end-of-street plane, and the nearest hit wins (a z-buffer).  Textures are
  looked up in world coordinates (metres), so they shrink with distance like real ones;
* ground: asphalt with lane marks, crossings and patches, curbs, paved sidewalks,
  grass/dirt terrain; fronts: buildings with windows and shop floors, walls, fences
  (see-through lattice), hedges; sky with clouds or overcast;
* objects drawn far-to-near (painter's order, hence occlusion) as projected 3D boxes and
  profiles: cars, trucks, buses, trams (Cityscapes "train"), people, riders on bicycles
  and motorcycles, poles, street lamps, traffic signs and lights, trees;
* cast shadows, sun/shade sides, haze, colour casts, blur and sensor noise.

Class colours deliberately overlap (grey asphalt vs grey paving vs grey concrete walls,
green grass vs hedges, grey cars vs road, overcast sky vs pale facades), poles are a few
pixels wide and distant objects tiny, so a bigger model has something to win.

Each image has its own seed ``(seed, split, index)``: the output does not depend on the
number of worker processes.  Hand-rolled because no maintained library renders labelled
street scenes without a GPU game engine.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from effseg.data.base import run_parallel
from effseg.data.cityscapes import TRAIN_ID_TO_LABEL_ID
from effseg.errors import DataError
from effseg.size import Size, read_old_size

# train ids
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEG, TERRAIN, SKY = range(11)
PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(11, 19)
# Cityscapes label ids of void classes drawn into the labels (-> ignore for training)
EGO_VEHICLE_ID, STATIC_ID = 1, 4
_EGO, _STATIC = 250, 251  # internal markers, turned into label ids on write

# Classes that are not in every scene; each image forces three of them (rotating with the
# index) so that every split of >= 3 images contains all 19 classes.
_RARE = ("wall", "fence", "terrain", "truck", "bus", "train", "bicycle", "motorcycle")

SPLIT_CITIES = {"train": ("synthburg", "pixelhafen"), "val": ("renderstadt",), "test": ("noiseville",)}
SYNTH_OPTIONS = {"n_train", "n_val", "size", "seed", "workers"}
MARKER = "effseg_synthetic.json"
DEFAULT_N_TRAIN, DEFAULT_N_VAL, DEFAULT_SIZE = 48, 12, Size(h=256, w=512)

_SHIFT = 4  # sub-pixel bits for cv2 polygons
_ONE = 1 << _SHIFT


def _noise_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """Tileable multi-octave value noise, ``float32 (size, size)`` roughly in [-1, 1]."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    for cells in (4, 8, 16, 32, 64, 128):
        g = rng.standard_normal((cells, cells)).astype(np.float32)
        g = np.pad(g, 2, mode="wrap")
        scale = size / cells
        up = cv2.resize(g, (int((cells + 4) * scale),) * 2, interpolation=cv2.INTER_CUBIC)
        o = int(2 * scale)
        out += amp * up[o : o + size, o : o + size]
        total += amp
        amp *= 0.65
    return out / total * 1.6


def _tex(t: np.ndarray, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Sample the tileable texture ``t`` at world coordinates ``(u, v)`` (metres) * ``scale``."""
    # truncation instead of floor: cheaper, and the doubled cell at 0 is invisible in noise
    iu = (u * np.float32(scale)).astype(np.int32) & 255
    iv = (v * np.float32(scale)).astype(np.int32) & 255
    return t.ravel()[(iv << 8) | iu]


def _frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


class _Plane:
    """A vertical plane of segments (buildings, walls, fences, hedges, trees, gaps).

    ``axis="x"``: the plane ``X = pos`` running along depth Z (street fronts);
    ``axis="z"``: the plane ``Z = pos`` facing the camera (the end of the street).
    Segment ``k`` covers ``edges[k] <= along < edges[k+1]``.
    """

    KINDS = {"none": 0, "building": 1, "wall": 2, "fence": 3, "hedge": 4, "trees": 5}

    def __init__(self, axis: str, pos: float, edges, kinds, heights, colors, params, shade: float) -> None:
        self.axis, self.pos, self.shade = axis, pos, shade
        self.edges = np.asarray(edges, np.float32)
        self.kinds = np.asarray(kinds, np.int32)
        self.heights = np.asarray(heights, np.float32)
        self.colors = np.asarray(colors, np.float32)
        self.params = np.asarray(params, np.float32)  # (n, 6): su, sv, wu, wv, ground floor, style

    def segment(self, along: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, along, side="right") - 1, 0, len(self.kinds) - 1)


class _Scene:
    """One rendered scene: build with a seed, then ``image`` (uint8 RGB) and ``label`` (uint8)."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], force: Sequence[str] = ()) -> None:
        self.rng = rng
        self.W, self.H = size
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
        self.tex = _noise_texture(r)
        self.tex2 = _noise_texture(r)
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
            kinds.append(_Plane.KINDS[kind])
            heights.append(h)
            colors.append(col)
            su = r.uniform(2.2, 4.0)
            sv = r.uniform(2.9, 3.6)
            params.append(
                [su, sv, r.uniform(0.3, 0.65), r.uniform(0.35, 0.6), r.uniform(3.0, 4.5), r.random()]
            )
        return edges, kinds, heights, colors, params

    def _side_plane(self, pos: float, shade: float, left: bool | None, force_side: dict) -> _Plane:
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
        return _Plane("x", pos, edges, kinds, heights, colors, params, shade)

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

    def _end_plane(self) -> _Plane:
        width = 2 * self.z_end * self.W / self.f + 40
        edges, kinds, heights, colors, params = self._segments(
            width, {"building": 0.65, "trees": 0.35}, [], True
        )
        edges = np.asarray(edges) - width / 2
        return _Plane("z", self.z_end, edges, kinds, heights, colors, params, 0.9)

    # ------------------------------------------------------------------ background
    def _background(self) -> None:
        W, H, f, hc = self.W, self.H, self.f, self.hc
        ys = (np.arange(H, dtype=np.float32) + 0.5 - self.y0)[:, None]  # (H, 1), + is down
        xs = (np.arange(W, dtype=np.float32) + 0.5 - self.cx)[None, :]  # (1, W)
        zmax = 400.0
        with np.errstate(divide="ignore"):
            zg = np.where(ys > 0.25, f * hc / np.maximum(ys, 1e-3), np.inf).astype(np.float32)
        zbuf = np.broadcast_to(np.where(zg < zmax, zg, np.inf), (H, W)).copy()
        surf = np.where(np.isfinite(zbuf), 1, 0).astype(np.int8)  # 0 sky, 1 ground, 2+k plane k
        hits = []
        for k, plane in enumerate(self.planes):
            if plane.axis == "x":
                with np.errstate(divide="ignore", invalid="ignore"):
                    zc = np.where(xs * plane.pos > 0, f * plane.pos / xs, np.inf)  # (1, W)
                along = zc
            else:
                zc = np.full((1, W), plane.pos, np.float32)
                along = xs * plane.pos / f
            seg = plane.segment(np.where(np.isfinite(along), along, 0))
            kind = plane.kinds[seg]
            height = plane.heights[seg].copy()
            rough = (kind == 4) | (kind == 5)
            if rough.any():  # ragged tops for hedges and tree lines
                n = self.tex[np.floor(np.where(np.isfinite(along), along, 0) * 7).astype(np.int64) & 255, 17]
                height = height + rough * (0.35 + 0.12 * height) * np.nan_to_num(n)
            # only the block of rows/columns the plane can cover is ray-cast
            colmask = np.isfinite(zc[0]) & (zc[0] > self.near) & (kind[0] > 0)
            if not colmask.any():
                hits.append(None)
                continue
            cidx = np.flatnonzero(colmask)
            c0, c1 = int(cidx[0]), int(cidx[-1]) + 1
            zs, hs, cm = zc[:, c0:c1], height[:, c0:c1], colmask[None, c0:c1]
            zfin = zs[cm]
            top = self.y0 + f * (hc - hs[cm]) / zfin
            bottom = self.y0 + f * hc / zfin
            r0 = max(0, int(np.floor(top.min())) - 1)
            r1 = min(H, int(np.ceil(bottom.max())) + 1)
            if r1 <= r0:
                hits.append(None)
                continue
            yy = hc - ys[r0:r1] * zs / f  # (h, w) height of the hit point, metres
            zb = zbuf[r0:r1, c0:c1]
            valid = cm & (yy >= 0) & (yy <= hs) & (zs < zb)
            fence = valid & (kind[:, c0:c1] == 3)
            if fence.any():
                u = np.broadcast_to(np.where(np.isfinite(along[:, c0:c1]), along[:, c0:c1], 0), yy.shape)
                holes = (_frac(u / 0.14) > 0.32) & (_frac(yy / 1.1) > 0.07) & (yy < hs - 0.07) & (yy > 0.12)
                valid &= ~(fence & holes)
            np.copyto(zb, np.broadcast_to(zs, zb.shape), where=valid)
            surf[r0:r1, c0:c1][valid] = 2 + k
            hits.append((along, yy, seg, r0, c0))
        self.zbuf = zbuf
        self.surf = surf
        img, lab = self.img.reshape(-1, 3), self.lab.reshape(-1)
        flat = surf.reshape(-1)
        # sky
        idx = np.flatnonzero(flat == 0)
        rows, cols = np.divmod(idx, W)
        t = np.clip((self.y0 - rows) / max(self.y0, 1), 0, 1)[:, None].astype(np.float32)
        col = self.haze * (1 - t) + self.sky_top * t
        clouds = np.clip(_tex(self.tex2, cols / W * 3, rows / H * 9, 20) * 1.2 - 0.2, 0, 1)[:, None]
        cloud_col = np.float32(225 if not self.overcast else 190)
        col = col * (1 - 0.8 * clouds) + cloud_col * 0.8 * clouds
        img[idx] = col
        lab[idx] = SKY
        # ground
        self._ground(np.flatnonzero(flat == 1), zg, xs)
        # planes
        for k, plane in enumerate(self.planes):
            idx = np.flatnonzero(flat == 2 + k)
            if len(idx):
                self._plane_pixels(plane, idx, *hits[k])

    def _ground(self, idx: np.ndarray, zg: np.ndarray, xs: np.ndarray) -> None:
        rows, cols = np.divmod(idx, self.W)
        # depth-only quantities are computed once per image row, then gathered
        z_row = np.where(np.isfinite(zg[:, 0]), zg[:, 0], 1e4).astype(np.float32)
        z = z_row[rows]
        x = xs[0, cols] * (z / np.float32(self.f))
        lab = np.full(len(idx), TERRAIN, np.uint8)
        side = ((x >= self.road_l - self.side_l) & (x < self.road_l)) | (
            (x > self.road_r) & (x <= self.road_r + self.side_r)
        )
        road = (x >= self.road_l) & (x <= self.road_r)
        beyond = (x < self.front_l) | (x > self.front_r)
        lab[side] = SIDEWALK
        lab[road] = ROAD
        if self.crossing is not None:
            z0, w = self.crossing
            cross = (z >= z0) & (z < z0 + w)
            corner = (z >= z0 - 3) & (z < z0 + w + 3) & ~cross & ~road & ~beyond
            lab[cross & ~road] = ROAD
            lab[corner] = SIDEWALK
        lab[beyond & (lab == TERRAIN) & (self.rng.random() < 0.5)] = SIDEWALK
        lab[z > self.z_end] = TERRAIN
        atten = np.clip(np.float32(12.0) / z_row, 0.15, 1.0).astype(np.float32)[rows][:, None]
        n1 = _tex(self.tex, x, z, 9.0)[:, None]
        n2 = _tex(self.tex2, x, z, 1.3)[:, None]
        col = np.empty((len(idx), 3), np.float32)
        m = np.flatnonzero(lab == ROAD)
        xm, zm = x[m], z[m]
        c = self.c_road * (1 + 0.10 * atten[m] * n1[m] + 0.07 * n2[m])
        # lane marks and crossing stripes: painted road is still road
        lanes = np.arange(self.road_l + self.lane_w, self.road_r - 0.1, self.lane_w)
        paint = (np.abs(xm - self.road_l - 0.3) < 0.06) | (np.abs(xm - self.road_r + 0.3) < 0.06)
        dashed = _frac(zm / 9.0) < 0.45
        for lane_x in lanes:
            paint |= (np.abs(xm - lane_x) < 0.07) & dashed
        if self.crossing is not None:
            z0, _ = self.crossing
            paint |= (zm > z0 - 4.5) & (zm < z0 - 1.0) & (_frac(xm / 1.0) < 0.5)
        c[paint] = c[paint] * 0.35 + np.float32(185) * 0.65
        col[m] = c
        m = np.flatnonzero(lab == SIDEWALK)
        xm, zm, am = x[m], z[m], atten[m]
        tile = ((_frac(xm / 0.6) < 0.05) | (_frac(zm / 0.6) < 0.05))[:, None] & (am > 0.5)
        curb = ((np.abs(xm - self.road_l) < 0.25) | (np.abs(xm - self.road_r) < 0.25))[:, None]
        col[m] = (
            self.c_side
            * (1 + 0.09 * am * n1[m] + 0.08 * n2[m])
            * np.where(tile, 0.88, 1.0)
            * np.where(curb, 1.12, 1.0)
        )
        m = np.flatnonzero(lab == TERRAIN)
        n3 = _tex(self.tex2, x[m], z[m], 4.0)[:, None]
        col[m] = self.c_terr * (1 + 0.22 * atten[m] * n1[m] + 0.2 * n2[m]) + 18 * n3 * np.float32(
            [1, -0.5, 0]
        )
        # cast shadows of the sunny side's fronts across the ground
        shade_side = self.front_r if self.shade_l == 1.0 else self.front_l
        plane = self.planes[1] if self.shade_l == 1.0 else self.planes[0]
        reach = (plane.heights[plane.segment(z_row)] * 0.6)[rows]
        inside = (x > shade_side - reach) if shade_side > 0 else (x < shade_side + reach)
        col[inside] *= min(self.shade_l, self.shade_r) + 0.1
        t = (1.0 - np.exp(-z_row / np.float32(self.haze_dist))).astype(np.float32)[rows][:, None]
        col *= 1 - t
        col += self.haze * t
        self.img.reshape(-1, 3)[idx] = col
        self.lab.reshape(-1)[idx] = lab

    def _plane_pixels(self, plane: _Plane, idx: np.ndarray, along, yy, seg, r0: int, c0: int) -> None:
        rows, cols = np.divmod(idx, self.W)
        a = along[0, cols]
        y = yy[rows - r0, cols - c0]
        s = seg[0, cols]
        kind = plane.kinds[s]
        u = a - plane.edges[s]
        n1 = _tex(self.tex, u, y, 6.0)
        n2 = _tex(self.tex2, u + 37 * s, y, 0.7)
        col = plane.colors[s] * (1 + 0.06 * n1 + 0.08 * n2)[:, None]
        lab = np.full(len(idx), BUILDING, np.uint8)
        lab[kind == 2] = WALL
        lab[kind == 3] = FENCE
        v = np.flatnonzero((kind == 4) | (kind == 5))
        if len(v):
            lab[v] = VEG
            leaf = _tex(self.tex, u[v], y[v], 14.0)
            col[v] = plane.colors[s[v]] * (1 + 0.35 * leaf + 0.15 * n2[v])[:, None]
        b = np.flatnonzero(kind == 1)
        if len(b):
            sb, ub, yb = s[b], u[b], y[b]
            p = plane.params[sb]
            su, sv, wu, wv, gf = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
            h = plane.heights[sb]
            fu, fv = _frac(ub / su), _frac((yb - gf) / sv)
            win = (yb > gf) & (yb < h - 0.9) & (np.abs(fu - 0.5) < wu / 2) & (np.abs(fv - 0.55) < wv / 2)
            shop = (yb <= gf - 0.6) & (yb > 0.25) & (np.abs(_frac(ub / (su * 1.7)) - 0.5) < 0.38)
            glassy = np.flatnonzero(win | shop)
            if len(glassy):
                g = glassy
                cell = np.floor(ub[g] / su[g]) * 7 + np.floor((yb[g] - gf[g]) / sv[g]) * 13 + sb[g] * 3
                cell = cell.astype(np.int64) & 255
                sky = 0.25 * self.sky_top * (yb[g] / 30)[:, None]
                glass = 35 + 70 * np.abs(self.tex2[cell, 5])[:, None] + sky
                glass = glass * np.float32([0.9, 0.95, 1.05])
                glass[shop[g]] = glass[shop[g]] * 0.9 + 10
                col[b[g]] = glass
            dark = np.flatnonzero((yb > h - 0.5) | (yb < 0.6))  # roof line and plinth
            col[b[dark]] *= 0.78
        col *= plane.shade
        z = np.float32(plane.pos) if plane.axis == "z" else a[:, None]
        self.img.reshape(-1, 3)[idx] = self._haze(col, z)
        self.lab.reshape(-1)[idx] = lab

    def _haze(self, col: np.ndarray, z) -> np.ndarray:
        t = 1.0 - np.exp(-np.asarray(z, np.float32) / self.haze_dist)
        return col * (1 - t) + self.haze * t

    # ------------------------------------------------------------------ drawing helpers
    def P(self, X, Y, Z) -> np.ndarray:
        """World (X right, Y up, Z forward; metres) -> pixel ``(N, 2)`` float."""
        X, Y, Z = np.broadcast_arrays(
            np.asarray(X, np.float64), np.asarray(Y, np.float64), np.asarray(Z, np.float64)
        )
        x = self.cx + self.f * X / Z
        y = self.y0 + self.f * (self.hc - Y) / Z
        return np.stack([x.ravel(), y.ravel()], 1)

    def poly(self, pts: np.ndarray, color, cls: int | None, z: float, shade: float = 1.0) -> None:
        """Fill a projected polygon; ``cls=None`` paints only the image (shadows, marks)."""
        if not np.all(np.isfinite(pts)):
            return
        ip = np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)
        c = self._haze(np.asarray(color, np.float32) * shade * self.sun_obj, z)
        cv2.fillPoly(self.img, [ip], c.tolist(), lineType=cv2.LINE_AA, shift=_SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, [ip], int(cls), lineType=cv2.LINE_8, shift=_SHIFT)

    def darken(self, pts: np.ndarray, factor: float) -> None:
        """Multiply the image inside a projected polygon by ``factor`` (shadows; labels unchanged)."""
        if not np.all(np.isfinite(pts)):
            return
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.W), min(y1, self.H)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        local = np.round((pts - [x0, y0]) * _ONE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [local], 1, shift=_SHIFT)
        self.img[y0:y1, x0:x1][mask.astype(bool)] *= factor

    def box(self, x0, x1, y0, y1, z0, z1, color, cls, top_shade=1.15, side_shade=0.8) -> None:
        """A 3D box aligned with the street; only camera-facing faces are drawn."""
        if z0 <= self.near:
            return
        col = np.asarray(color, np.float32)
        if x1 < 0:
            self.poly(self.P([x1, x1, x1, x1], [y0, y0, y1, y1], [z0, z1, z1, z0]), col, cls, z0, side_shade)
        elif x0 > 0:
            self.poly(self.P([x0, x0, x0, x0], [y0, y0, y1, y1], [z0, z1, z1, z0]), col, cls, z0, side_shade)
        if y1 < self.hc:
            self.poly(self.P([x0, x1, x1, x0], [y1] * 4, [z0, z0, z1, z1]), col, cls, z0, top_shade)
        elif y0 > self.hc:
            self.poly(self.P([x0, x1, x1, x0], [y0] * 4, [z0, z0, z1, z1]), col, cls, z0, 0.7)
        self.poly(self.P([x0, x1, x1, x0], [y0, y0, y1, y1], [z0] * 4), col, cls, z0, 1.0)

    def profile(self, X, Z, along: bool, u, v) -> np.ndarray:
        """Project a 2D profile (u along the travel direction, v up; metres) placed at (X, Z).

        ``along``: travelling along the street (profile in the plane X = const), else across it.
        """
        u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
        if along:
            return self.P(X, v, Z + u)
        return self.P(X + u, v, Z)

    def ellipse_pts(self, cu, cv, ru, rv, n=16):
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return cu + ru * np.cos(t), cv + rv * np.sin(t)

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
            cls = BUS
            paint = (
                self._paint()
                if r.random() < 0.5
                else np.array([r.uniform(180, 240), r.uniform(150, 220), 40], np.float32)
            )
        else:
            w, L, h = 2.4, r.uniform(22, 32), r.uniform(3.2, 3.5)
            cls = TRAIN
            paint = (
                self._paint()
                if r.random() < 0.5
                else np.array([r.uniform(180, 240), r.uniform(30, 70), 40], np.float32)
            )
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
            ip = np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)
            c = self._haze(dark, z).tolist()
            if kind == "motorcycle":
                cv2.fillPoly(self.img, [ip], c, lineType=cv2.LINE_AA, shift=_SHIFT)
                cv2.fillPoly(self.lab, [ip], cls, shift=_SHIFT)
            else:
                cv2.polylines(self.img, [ip], True, c, thick, lineType=cv2.LINE_AA, shift=_SHIFT)
                cv2.polylines(self.lab, [ip], True, cls, thick, shift=_SHIFT)
        if kind == "bicycle":
            fu = [0.0, 0.45, 0.95, base, 0.95, 0.4, 0.45]
            fv = [wr, wr, 0.85, wr, 0.85, 0.82, wr]
            pts = self.profile(x, z, along, fu, fv)
            ip = np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(
                self.img,
                [ip],
                False,
                self._haze(frame, z).tolist(),
                thick,
                lineType=cv2.LINE_AA,
                shift=_SHIFT,
            )
            cv2.polylines(self.lab, [ip], False, cls, thick, shift=_SHIFT)
        else:
            u = [0.1, base - 0.1, base - 0.05, 0.75, 0.3, 0.05]
            v = [0.35, 0.35, 0.85, 0.95, 0.8, 0.6]
            self.poly(self.profile(x, z, along, u, v), frame, cls, z)
        if ridden:
            mid = base / 2
            px, pz = (x, z + mid) if along else (x + mid, z)
            self.person(px, pz - 0.01, "ride", cls=RIDER, h=r.uniform(1.55, 1.85))

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
        self.box(x - w / 2, x + w / 2, 0, h, z, z + w, r.uniform(30, 160, 3), _STATIC)

    def ego_hood(self) -> None:
        W, H = self.W, self.H
        top = H * self.rng.uniform(0.88, 0.95)
        pts = np.array(
            [[0, H], [0, top + 0.05 * H], [W * 0.3, top], [W * 0.7, top], [W, top + 0.05 * H], [W, H]],
            np.float64,
        )
        ip = np.round(pts * _ONE).astype(np.int32).reshape(-1, 1, 2)
        c = self._paint() * 0.5
        cv2.fillPoly(self.img, [ip], c.tolist(), lineType=cv2.LINE_AA, shift=_SHIFT)
        cv2.fillPoly(self.lab, [ip], _EGO, shift=_SHIFT)

    # ------------------------------------------------------------------ camera effects
    def _finish(self) -> None:
        r = self.rng
        img = self.img
        if r.random() < 0.7:
            img = cv2.GaussianBlur(img, (0, 0), r.uniform(0.3, 0.9))
        vx = ((np.arange(self.W, dtype=np.float32) - self.W / 2) / self.W) ** 2
        vy = ((np.arange(self.H, dtype=np.float32) - self.H / 2) / self.H) ** 2
        img *= (1 - 0.5 * (vx[None, :] + vy[:, None]))[..., None]  # vignette
        img *= (self.cast * self.sun).astype(np.float32)  # colour cast, exposure
        noise = r.standard_normal((self.H, self.W), dtype=np.float32) * np.float32(r.uniform(2, 7))
        img += noise[..., None]
        np.clip(img, 0, 255, out=img)
        self.image = img.astype(np.uint8)
        self.label = self.lab


def render_scene(
    seed: int | Sequence[int], size: Size | str = "1024x512", force: Sequence[str] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Render one scene: ``(image uint8 (H, W, 3) RGB, label uint8 (H, W) train ids, 255 = void)``.

    ``size``: a :class:`Size` or ``"WIDTHxHEIGHT"`` text (a plain pair is the old ``(W, H)``).
    ``force``: rare classes that must appear (names from ``_RARE``).
    """
    scene = _make_scene(seed, read_old_size(size, "size", "wh").wh, force)
    label = scene.label.copy()
    label[(label == _EGO) | (label == _STATIC)] = 255
    return scene.image, label


_RARE_IDS = {"wall": WALL, "fence": FENCE, "terrain": TERRAIN, "truck": TRUCK, "bus": BUS,
             "train": TRAIN, "bicycle": BICYCLE, "motorcycle": MOTORCYCLE}  # fmt: skip


def _make_scene(seed: int | Sequence[int], size: tuple[int, int], force: Sequence[str]) -> _Scene:
    """Render with ``seed``; if a forced class ended up hidden (occluded, off-screen), re-render
    with the derived seeds ``(*seed, 1)``, ``(*seed, 2)``, ... (deterministic, at most 6 tries)."""
    base = [int(s) for s in np.atleast_1d(seed)]
    scene = None
    for attempt in range(6):
        scene = _Scene(np.random.default_rng(base + [attempt] if attempt else base), size, force)
        present = np.bincount(scene.lab.ravel(), minlength=256) > 0
        if all(present[_RARE_IDS[name]] for name in force):
            break
    return scene


def _label_ids(label_internal: np.ndarray) -> np.ndarray:
    lut = np.zeros(256, np.uint8)  # unlabeled = 0
    lut[: len(TRAIN_ID_TO_LABEL_ID)] = TRAIN_ID_TO_LABEL_ID
    lut[_EGO] = EGO_VEHICLE_ID
    lut[_STATIC] = STATIC_ID
    return lut[label_internal]


def _forced(index: int) -> tuple[str, ...]:
    return tuple(_RARE[(3 * index + k) % len(_RARE)] for k in range(3))


def _job(args: tuple) -> None:
    seed, split, index, size, out = args
    split_code = {"train": 1, "val": 2, "test": 3}.get(split, 9)
    scene = _make_scene([seed, split_code, index], size, _forced(index))
    img_path, lab_path = _paths(Path(out), split, index)
    img_path.parent.mkdir(parents=True, exist_ok=True)
    lab_path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(img_path, cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    _write_png(lab_path, _label_ids(scene.label))


def _write_png(path: Path, array: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DataError(f"{path}: PNG encoding failed")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def _paths(out: Path, split: str, index: int) -> tuple[Path, Path]:
    cities = SPLIT_CITIES.get(split, (split,))
    city = cities[index % len(cities)]
    seq, frame = index // len(cities), 19
    stem = f"{city}_{seq:06d}_{frame:06d}"
    return (
        out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
        out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
    )


def generate_city(
    out_dir: str | os.PathLike,
    n_train: int,
    n_val: int,
    size: Size | str = "1024x512",
    seed: int = 0,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Write ``n_train`` + ``n_val`` synthetic street scenes of ``size`` in Cityscapes layout.

    ``size``: a :class:`Size` or ``"WIDTHxHEIGHT"`` text (a plain pair is the old ``(W, H)``).

    Labels are Cityscapes *label ids* (``_gtFine_labelIds.png``). Deterministic for a
    ``seed`` whatever ``workers`` is (default: up to ``os.cpu_count()`` processes for
    more than 8 images). Returns ``out_dir``.
    """
    w, h = read_old_size(size, "size", "wh").wh
    if w < 32 or h < 16:
        raise DataError(f"size {w}x{h}: too small for a street scene; use at least 32x16")
    if n_train < 0 or n_val < 0:
        raise DataError(f"image counts must be >= 0, got n_train={n_train}, n_val={n_val}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    jobs = [
        (int(seed), split, i, (w, h), str(out))
        for split, n in (("train", n_train), ("val", n_val))
        for i in range(n)
    ]
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if len(jobs) > 8 else 1
    run_parallel(_job, jobs, workers, "synthesising city" if progress else None)
    meta = {
        "generator": "effseg.data.synthetic",
        "version": 1,
        "n_train": n_train,
        "n_val": n_val,
        "size": [w, h],
        "seed": int(seed),
    }
    (out / MARKER).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def ensure_city(
    root: str | os.PathLike,
    n_train: int | None = None,
    n_val: int | None = None,
    size: Size | str | None = None,
    seed: int | None = None,
    workers: int | None = None,
) -> Path:
    """Generate a synthetic city into ``root`` unless one is there already.

    Generation goes to a temporary sibling folder renamed into place, so concurrent
    callers (e.g. DDP ranks) and interrupted runs never see a half-written city. An
    existing city generated with other explicitly requested options is an error.
    """
    root = Path(root).expanduser()
    asked = {
        "n_train": n_train,
        "n_val": n_val,
        "size": list(read_old_size(size, "size", "wh").wh) if size else None,  # marker: [W, H]
        "seed": seed,
    }
    marker = root / MARKER
    if marker.is_file():
        meta = json.loads(marker.read_text())
        for key, value in asked.items():
            if value is not None and meta.get(key) != value:
                raise DataError(
                    f"{root} holds a synthetic city with {key}={meta.get(key)!r}, not {value!r}; "
                    "use another root or delete it"
                )
        return root
    if (root / "leftImg8bit").is_dir():
        return root  # a Cityscapes-layout folder made elsewhere: use as is
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_city(
            tmp,
            DEFAULT_N_TRAIN if n_train is None else n_train,
            DEFAULT_N_VAL if n_val is None else n_val,
            DEFAULT_SIZE if size is None else size,
            0 if seed is None else seed,
            workers,
        )
        try:
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()
            os.replace(tmp, root)
        except OSError:
            if not (root / MARKER).is_file():  # lost a race only if the winner finished
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def contact_sheet(
    out_path: str | os.PathLike, n: int = 4, size: Size | str = "1024x512", seed: int = 0
) -> Path:
    """Save a PNG grid of ``n`` generated images beside their colour labels, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from effseg.data.base import colorize
    from effseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    fig, axes = plt.subplots(n, 2, figsize=(12, 3.1 * n + 1.0), squeeze=False)
    for i in range(n):
        image, label = render_scene([seed, 1, i], size, _forced(i))
        axes[i, 0].imshow(image)
        axes[i, 1].imshow(colorize(label, CITYSCAPES_PALETTE))
        for ax in axes[i]:
            ax.set_axis_off()
    axes[0, 0].set_title("synthetic image")
    axes[0, 1].set_title("label (Cityscapes colours, black = ignore)")
    handles = [
        Patch(color=np.asarray(c) / 255, label=name)
        for name, c in zip(CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=10, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


__all__ = ["generate_city", "ensure_city", "render_scene", "contact_sheet", "SYNTH_OPTIONS"]
