"""The mouse's behaviour: running bouts, pupil dilation, eye position, arousal latents.

Scaled per mouse to that mouse's real Sensorium 2023 statistics: a mouse
that barely ran (mouse B) barely runs here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cortexcast.daq.sim.meta import MouseMeta


@dataclass(frozen=True)
class BehaviorSample:
    running: float  # cm/s
    pupil: float  # pupil dilation (eye-camera px, Sensorium scale)
    pupil_x: float
    pupil_y: float
    run_state: float  # 0..1, saturating function of smoothed running speed
    pupil_z: float  # pupil dilation z-score
    latent: np.ndarray  # (2,) shared slow fluctuations, unit variance
    eye: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) true eye position x, y in eye-std units

    def as_dict(self) -> dict[str, float]:
        return {"running": self.running, "pupil": self.pupil,
                "pupil_x": self.pupil_x, "pupil_y": self.pupil_y}


class BehaviorModel:
    """Call :meth:`step` once per imaging frame."""

    def __init__(self, meta: MouseMeta, dt: float, rng: np.random.Generator,
                 tracking_noise: float = 0.0,
                 tracking_rng: np.random.Generator | None = None,
                 tracking_offset: float = 0.0) -> None:
        self.dt = dt
        self.tracking_offset = tracking_offset
        self.rng = rng
        self.tracking_noise = tracking_noise
        # its own generator: the noise of the eye camera does not change the mouse's behaviour
        self.tracking_rng = tracking_rng or np.random.default_rng(0)
        pupil_mean, run_mean = meta.behavior_mean
        pupil_std, run_std = meta.behavior_std
        self.pupil_mean, self.pupil_std = float(pupil_mean), float(max(pupil_std, 1e-3))
        self.eye_mean = meta.pupil_mean.astype(float)
        self.eye_std = np.maximum(meta.pupil_std.astype(float), 1e-3)
        self.run_speed = max(float(run_mean + run_std), 5.0)  # typical speed while running
        frac = float(np.clip(run_mean / self.run_speed, 0.02, 0.8))
        self.bout_run_s = 8.0
        self.bout_rest_s = self.bout_run_s * (1 - frac) / frac
        self.running = bool(rng.random() < frac)
        self.speed = self.run_speed if self.running else 0.0
        self.speed_smooth = self.speed
        self.arousal = 0.0
        self.pupil_z = 0.0
        self.eye = np.zeros(2)
        self.latent = rng.normal(size=2)

    def _ou(self, x: np.ndarray | float, tau: float, sigma: float,
            mean: np.ndarray | float = 0.0) -> np.ndarray | float:
        a = np.exp(-self.dt / tau)
        noise = self.rng.normal(size=np.shape(x)) if np.ndim(x) else self.rng.normal()
        return mean + a * (x - mean) + sigma * np.sqrt(1 - a * a) * noise

    def step(self) -> BehaviorSample:
        dt, rng = self.dt, self.rng
        mean_bout = self.bout_run_s if self.running else self.bout_rest_s
        if rng.random() < dt / mean_bout:
            self.running = not self.running
        if self.running:
            target = self._ou(self.speed, 1.5, 0.35 * self.run_speed, self.run_speed)
        else:
            target = abs(rng.normal(0.0, 0.2))
        self.speed += (1 - np.exp(-dt / 0.4)) * (float(target) - self.speed)
        self.speed = max(self.speed, 0.0)
        self.speed_smooth += (1 - np.exp(-dt / 1.0)) * (self.speed - self.speed_smooth)
        run_state = self.speed_smooth / (self.speed_smooth + 5.0)
        self.arousal = float(self._ou(self.arousal, 8.0, 0.7))
        target_z = self.arousal + 1.6 * (run_state - 0.25)
        self.pupil_z += (1 - np.exp(-dt / 1.5)) * (target_z - self.pupil_z)
        if rng.random() < dt * (0.2 + 0.8 * run_state):  # saccade
            self.eye = np.clip(self.eye + rng.normal(0.0, 0.8, 2), -3, 3)
        self.eye = np.asarray(self._ou(self.eye, 3.0, 0.3))
        self.latent = np.asarray(self._ou(self.latent, 2.0, 1.0))
        seen = self.eye + self.tracking_offset
        if self.tracking_noise > 0:
            seen = seen + self.tracking_noise * self.tracking_rng.normal(size=2)
        return BehaviorSample(
            running=float(self.speed),
            pupil=float(max(self.pupil_mean + self.pupil_std * self.pupil_z, 1.0)),
            pupil_x=float(self.eye_mean[0] + self.eye_std[0] * seen[0]),
            pupil_y=float(self.eye_mean[1] + self.eye_std[1] * seen[1]),
            run_state=float(run_state), pupil_z=float(self.pupil_z),
            latent=self.latent.astype(np.float32), eye=self.eye.copy(),
        )
