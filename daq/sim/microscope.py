"""The microscope: neuron fluorescence -> one uint16 two-photon frame.

``frame = dark + neuropil + Σ_i F_i · footprint_i``, seen through a rigid
integer shift (brain motion), with shot noise (Gaussian approximation,
variance = photon_gain × mean) and read noise. ``F_i`` is the neuron's
resting brightness × slow drift × (1 + ΔF/F); the neuropil is a smooth
static texture whose brightness follows the local mean activity (averaged
on a 16-px block grid, each block over the neurons in and around it, then
bilinearly interpolated to pixels by broadcasting, no BLAS: a threaded BLAS
call here costs more in jitter than it saves) and the global drift.

Costs per frame are a handful of full-frame vector operations plus one
sparse product (footprints, CSC) — no per-neuron Python. Standard normals
come from a bank drawn once, read at a random offset each frame (drawing
262k normals costs ~2.5 ms, more than everything else together).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from cortexcast.daq.sim.layout import Layout
from cortexcast.daq.sim.settings import SimSettings

BLOCK_PX = 16
NEUROPIL_ACTIVITY_GAIN = 0.6  # neuropil ΔF/F per unit of local mean neuronal ΔF/F
_NOISE_BANK_MAX = 4_000_000


class Microscope:
    def __init__(self, settings: SimSettings, layout: Layout, animal_rng: np.random.Generator,
                 session_rng: np.random.Generator) -> None:
        s = settings
        self.settings = s
        self.rng = session_rng
        h, w = layout.frame_shape
        self.frame_shape = (h, w)
        self.pad = math.ceil(2 * s.motion_px) if s.motion_px > 0 else 0
        b = BLOCK_PX
        self.by = -(-(h + 2 * self.pad) // b)
        self.bx = -(-(w + 2 * self.pad) // b)
        hc, wc = self.by * b, self.bx * b
        self.canvas_shape = (hc, wc)
        n = layout.n_neurons
        # -- the animal: brightness of each soma, the neuropil texture ----------------------------
        depth = np.exp(-(layout.coords_um[:, 2] - 200.0).clip(0) / 1000.0)
        self.f0 = (s.baseline_counts * depth * animal_rng.lognormal(0.0, 0.35, n)).astype(
            np.float32)
        field = ndimage.gaussian_filter(animal_rng.normal(size=(hc, wc)), 4.0)
        field /= field.std() or 1.0
        tex = s.neuropil_counts * np.clip(1.0 + 0.3 * field, 0.2, None)
        self._tex = tex.astype(np.float32)
        f = (np.arange(b, dtype=np.float32) + 0.5) / b - 0.5  # pixel offset from block centre
        self._w_right = np.maximum(f, 0)
        self._w_left = np.minimum(f, 0)
        # -- footprints on the (padded) canvas, CSC for a fast scatter-add ------------------------
        fp = layout.footprints.tocoo()
        y, x = np.divmod(fp.col, w)
        render = sp.csr_matrix((fp.data, (fp.row, (y + self.pad) * wc + (x + self.pad))),
                               shape=(n, hc * wc))
        self._render = render.T  # (hc*wc, n) CSC view: matvec loops over neurons
        # -- neuropil activity: each neuron's ΔF/F averaged into its block and the 8 around it -----
        cy = ((layout.centre_px[:, 0] + self.pad) // b).astype(np.int64)
        cx = ((layout.centre_px[:, 1] + self.pad) // b).astype(np.int64)
        rows, cols, vals = [], [], []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                yy, xx = cy + dy, cx + dx
                ok = (yy >= 0) & (yy < self.by) & (xx >= 0) & (xx < self.bx)
                rows.append((yy * self.bx + xx)[ok])
                cols.append(np.flatnonzero(ok))
                vals.append(np.full(ok.sum(), 0.5 ** (abs(dy) + abs(dx))))
        blk = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(self.by * self.bx, n))
        sums = np.asarray(blk.sum(axis=1)).ravel()
        self._blocks = sp.csr_matrix(sp.diags(1.0 / np.maximum(sums, 1.0)) @ blk, dtype=np.float32)
        self._canvas = np.empty((hc, wc), np.float32)
        # -- the session: drift, motion, noise ---------------------------------------------------
        r = session_rng
        p = s.drift_period_s
        self._drift_phase = r.uniform(0, 2 * np.pi, 2)
        self._nd_period = (p * r.uniform(0.5, 2.0, n)).astype(np.float32)
        self._nd_phase = r.uniform(0, 2 * np.pi, n).astype(np.float32)
        self._motion = np.zeros(2)
        self.shift = (0, 0)
        hw = h * w
        self._bank = r.standard_normal(hw + min(7 * hw, _NOISE_BANK_MAX), dtype=np.float32)

    def drift(self, t: float) -> tuple[float, np.ndarray]:
        """(global brightness factor, per-neuron factor) at rig time t."""
        d, p = self.settings.drift_fraction, self.settings.drift_period_s
        if d == 0:
            return 1.0, np.ones_like(self.f0)
        g = 1.0 + d * (0.7 * math.sin(2 * math.pi * t / p + self._drift_phase[0])
                       + 0.3 * math.sin(2 * math.pi * t / (0.31 * p) + self._drift_phase[1]))
        per = 1.0 + 0.5 * d * np.sin((2 * np.pi * t) / self._nd_period + self._nd_phase)
        return g, per

    def _step_motion(self, dt: float, run_state: float) -> tuple[int, int]:
        m = self.settings.motion_px
        if m <= 0:
            return 0, 0
        a = math.exp(-dt / 1.5)
        self._motion = a * self._motion + m * math.sqrt(1 - a * a) * self.rng.normal(size=2)
        d = np.clip(np.rint(self._motion * (1.0 + run_state)), -self.pad, self.pad)
        return int(d[0]), int(d[1])

    def render(self, t: float, dt: float, dff: np.ndarray, run_state: float = 0.0) -> np.ndarray:
        """One (H, W) uint16 frame (a new array) for per-neuron ΔF/F ``dff`` at time t."""
        s = self.settings
        g, per = self.drift(t)
        f = self.f0 * per
        f *= 1.0 + dff
        f *= g
        act = (self._blocks @ dff).reshape(self.by, self.bx)
        scale = np.float32(g) * (1.0 + NEUROPIL_ACTIVITY_GAIN * act)
        self._upsample(scale, self._canvas)
        self._canvas *= self._tex
        flat = self._canvas.reshape(-1)
        flat += self._render @ f
        self.shift = self._step_motion(dt, run_state)
        h, w = self.frame_shape
        oy, ox = self.pad + self.shift[0], self.pad + self.shift[1]
        mean = self._canvas[oy:oy + h, ox:ox + w] + np.float32(s.dark_counts)
        start = int(self.rng.integers(0, self._bank.size - h * w + 1))
        z = self._bank[start:start + h * w].reshape(h, w)
        if s.photon_gain > 0:
            sd = mean * np.float32(s.photon_gain)
            sd += np.float32(s.read_noise_counts ** 2)
            np.sqrt(sd, out=sd)
            sd *= z
        else:
            sd = z * np.float32(s.read_noise_counts)
        sd += mean
        np.clip(sd, 0, 65535, out=sd)
        out = np.empty((h, w), np.uint16)
        np.copyto(out, sd, casting="unsafe")
        return out


    def _upsample(self, blocks: np.ndarray, out: np.ndarray) -> None:
        """Bilinear interpolation of (by, bx) block-centre values to the (hc, wc) canvas.

        Along x on the small (by, bx) array first, then along y writing the
        canvas in place with contiguous inner loops: each pixel row of a block
        is its block row plus a fraction of the difference to the row above
        (upper half) or below (lower half).
        """
        b, half = BLOCK_PX, BLOCK_PX // 2
        wr, wl = self._w_right, self._w_left
        left, right = _neighbours(blocks, axis=1)
        cols = (blocks[:, :, None] + (right - blocks)[:, :, None] * wr
                + (blocks - left)[:, :, None] * wl).reshape(blocks.shape[0], -1)  # (by, wc)
        up, dn = _neighbours(cols, axis=0)
        o = out.reshape(cols.shape[0], b, cols.shape[1])
        np.multiply((cols - up)[:, None, :], wl[:half, None], out=o[:, :half])
        np.multiply((dn - cols)[:, None, :], wr[half:, None], out=o[:, half:])
        o += cols[:, None, :]

def _neighbours(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The previous and next entries along ``axis``, repeating the edges."""
    a = np.moveaxis(a, axis, 0)
    prev = np.concatenate([a[:1], a[:-1]])
    nxt = np.concatenate([a[1:], a[-1:]])
    return np.moveaxis(prev, 0, axis), np.moveaxis(nxt, 0, axis)
