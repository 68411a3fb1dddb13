"""The pinhole camera of a synthetic scene: projection, drawing primitives and sensor effects.

:class:`CameraMixin` is part of :class:`effseg.data.synthetic.scene.Scene`; it uses the scene's
camera (focal length ``f`` in pixels, principal point ``cx``, horizon row ``y0``, height ``hc``
in metres), its float image ``img (H, W, 3)``, its label ``lab (H, W)`` and its generator ``rng``.
World coordinates: X right, Y up, Z forward, in metres.
"""

from __future__ import annotations

import cv2
import numpy as np

SHIFT = 4  # sub-pixel bits for cv2 polygons
ONE = 1 << SHIFT


class CameraMixin:
    """Projection (:meth:`P`), filled polygons, boxes and profiles, haze, and the sensor (:meth:`_finish`)."""

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
        ip = np.round(pts * ONE).astype(np.int32).reshape(-1, 1, 2)
        c = self._haze(np.asarray(color, np.float32) * shade * self.sun_obj, z)
        cv2.fillPoly(self.img, [ip], c.tolist(), lineType=cv2.LINE_AA, shift=SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, [ip], int(cls), lineType=cv2.LINE_8, shift=SHIFT)

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
        local = np.round((pts - [x0, y0]) * ONE).astype(np.int32).reshape(-1, 1, 2)
        cv2.fillPoly(mask, [local], 1, shift=SHIFT)
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
