"""The background of a synthetic scene, ray-cast per pixel against planes (a z-buffer).

Every pixel's ray hits the ground plane, the two street-front planes (:class:`Plane`: buildings,
walls, fences, hedges, trees), backdrop planes behind gaps, the end of the street, or the sky;
the nearest hit wins. Textures are looked up in world coordinates (metres), so they shrink with
distance like real ones. :class:`BackgroundMixin` is part of
:class:`effseg.data.synthetic.scene.Scene`.
"""

from __future__ import annotations

import cv2
import numpy as np

from effseg.data.synthetic.labels import BUILDING, FENCE, ROAD, SIDEWALK, SKY, TERRAIN, VEG, WALL


def noise_texture(rng: np.random.Generator, size: int = 256) -> np.ndarray:
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


def tex(t: np.ndarray, u: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """Sample the tileable texture ``t`` at world coordinates ``(u, v)`` (metres) * ``scale``."""
    # truncation instead of floor: cheaper, and the doubled cell at 0 is invisible in noise
    iu = (u * np.float32(scale)).astype(np.int32) & 255
    iv = (v * np.float32(scale)).astype(np.int32) & 255
    return t.ravel()[(iv << 8) | iu]


def frac(x: np.ndarray) -> np.ndarray:
    return x - np.floor(x)


class Plane:
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


class BackgroundMixin:
    """Sky, ground (road, lanes, curbs, sidewalks, terrain) and the street-front planes."""

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
                holes = (frac(u / 0.14) > 0.32) & (frac(yy / 1.1) > 0.07) & (yy < hs - 0.07) & (yy > 0.12)
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
        clouds = np.clip(tex(self.tex2, cols / W * 3, rows / H * 9, 20) * 1.2 - 0.2, 0, 1)[:, None]
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
        n1 = tex(self.tex, x, z, 9.0)[:, None]
        n2 = tex(self.tex2, x, z, 1.3)[:, None]
        col = np.empty((len(idx), 3), np.float32)
        m = np.flatnonzero(lab == ROAD)
        xm, zm = x[m], z[m]
        c = self.c_road * (1 + 0.10 * atten[m] * n1[m] + 0.07 * n2[m])
        # lane marks and crossing stripes: painted road is still road
        lanes = np.arange(self.road_l + self.lane_w, self.road_r - 0.1, self.lane_w)
        paint = (np.abs(xm - self.road_l - 0.3) < 0.06) | (np.abs(xm - self.road_r + 0.3) < 0.06)
        dashed = frac(zm / 9.0) < 0.45
        for lane_x in lanes:
            paint |= (np.abs(xm - lane_x) < 0.07) & dashed
        if self.crossing is not None:
            z0, _ = self.crossing
            paint |= (zm > z0 - 4.5) & (zm < z0 - 1.0) & (frac(xm / 1.0) < 0.5)
        c[paint] = c[paint] * 0.35 + np.float32(185) * 0.65
        col[m] = c
        m = np.flatnonzero(lab == SIDEWALK)
        xm, zm, am = x[m], z[m], atten[m]
        tile = ((frac(xm / 0.6) < 0.05) | (frac(zm / 0.6) < 0.05))[:, None] & (am > 0.5)
        curb = ((np.abs(xm - self.road_l) < 0.25) | (np.abs(xm - self.road_r) < 0.25))[:, None]
        col[m] = (
            self.c_side
            * (1 + 0.09 * am * n1[m] + 0.08 * n2[m])
            * np.where(tile, 0.88, 1.0)
            * np.where(curb, 1.12, 1.0)
        )
        m = np.flatnonzero(lab == TERRAIN)
        n3 = tex(self.tex2, x[m], z[m], 4.0)[:, None]
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

    def _plane_pixels(self, plane: Plane, idx: np.ndarray, along, yy, seg, r0: int, c0: int) -> None:
        rows, cols = np.divmod(idx, self.W)
        a = along[0, cols]
        y = yy[rows - r0, cols - c0]
        s = seg[0, cols]
        kind = plane.kinds[s]
        u = a - plane.edges[s]
        n1 = tex(self.tex, u, y, 6.0)
        n2 = tex(self.tex2, u + 37 * s, y, 0.7)
        col = plane.colors[s] * (1 + 0.06 * n1 + 0.08 * n2)[:, None]
        lab = np.full(len(idx), BUILDING, np.uint8)
        lab[kind == 2] = WALL
        lab[kind == 3] = FENCE
        v = np.flatnonzero((kind == 4) | (kind == 5))
        if len(v):
            lab[v] = VEG
            leaf = tex(self.tex, u[v], y[v], 14.0)
            col[v] = plane.colors[s[v]] * (1 + 0.35 * leaf + 0.15 * n2[v])[:, None]
        b = np.flatnonzero(kind == 1)
        if len(b):
            sb, ub, yb = s[b], u[b], y[b]
            p = plane.params[sb]
            su, sv, wu, wv, gf = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]
            h = plane.heights[sb]
            fu, fv = frac(ub / su), frac((yb - gf) / sv)
            win = (yb > gf) & (yb < h - 0.9) & (np.abs(fu - 0.5) < wu / 2) & (np.abs(fv - 0.55) < wv / 2)
            shop = (yb <= gf - 0.6) & (yb > 0.25) & (np.abs(frac(ub / (su * 1.7)) - 0.5) < 0.38)
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
