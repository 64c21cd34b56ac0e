"""The simulated two-photon rig: an :class:`cortexcast.daq.source.AcquisitionSource` like a real one.

Per imaging frame ``i`` (rig time ``t = i / imaging_rate_hz``) it yields, in
order: the :class:`StimulusFrame` (s) whose on-screen onset is at or before
the middle of the frame (global, increasing indices), the :class:`SyncEvent`
saying which stimulus frame was on screen then, when it appeared (``t_flip``,
the onset the photodiode sees), the photodiode trace during the frame and the
mouse's behaviour, and then the :class:`ImagingFrame` (uint16 pixels). The
sync comes first because a rig's sync lines are sampled during the frame while
its pixels arrive only when the frame is read out; a decoder that needs both
never waits.

Stimulus frame ``j`` appears at ``monitor_delay_s + j / stim_rate_hz``. With
``clips`` the rig plays them back to back and stops after the last frame has
left the screen; without, it plays an endless movie from the ``images``
pool. ``paced`` sleeps until each frame's absolute deadline (no drift);
otherwise frames come as fast as they are computed.

With ``[daq.sim] clips`` (a ``cortexcast clips`` folder, and no ``clips`` argument) the
clips are that folder's playlist, and the rig plays a whole rig rather than a microscope
with a built-in screen: it yields no StimulusFrame but announces each imaging frame's flips
to ``stimulus_to`` and its eye tracker's sample to ``eye_to`` (:mod:`.announcer`), at the
moment the frame's sync is yielded, and its SyncEvent carries only ``running``; the daq
gets the rest from its stimulus and behaviour sources, as on a real rig.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from cortexcast.daq.sim.announcer import RigAnnouncer
from cortexcast.daq.sim.behavior import BehaviorModel
from cortexcast.daq.sim.layout import Layout, build_layout
from cortexcast.daq.sim.meta import load_mouse
from cortexcast.daq.sim.microscope import Microscope
from cortexcast.daq.sim.neurons import (FilterBank, NeuralState, Population, calibrate, coverage_mask,
                             make_population, retinotopy)
from cortexcast.daq.sim.settings import SimSettings
from cortexcast.daq.sim.stimulus import STIM_SHAPE, MovieGenerator, load_pool
from cortexcast.core.events import Event, ImagingFrame, StimulusFrame, SyncEvent
from cortexcast.core.pacing import FramePacer
from cortexcast.daq.source import AcquisitionError, AcquisitionSource

if TYPE_CHECKING:  # decoder is imported lazily: daq does not need it to run
    from cortexcast.core.rois import ROISet
    from cortexcast.daq.playlist import ClipSet

# Stream tags: which part of the animal / session a random generator draws.
_LAYOUT, _RF, _POP, _CAL, _SCOPE = 1, 2, 3, 4, 5
_MOVIE, _BEHAVIOR, _SPIKES, _SCOPE_SESSION, _PHOTODIODE, _TRACKING = 11, 12, 13, 14, 15, 16
CALIBRATION_FRAMES = 240
PHOTODIODE_LOW_V, PHOTODIODE_HIGH_V = 0.05, 1.2


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def _check_clips(clips: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for k, c in enumerate(clips):
        a = np.asarray(c)
        if a.ndim != 3 or a.shape[1:] != STIM_SHAPE or a.shape[0] < 1:
            raise ValueError(f"clip {k} must be (T, 36, 64) with T >= 1, got {a.shape}")
        if a.dtype != np.uint8:
            raise ValueError(f"clip {k} must be uint8, got {a.dtype}")
        out.append(a)
    if not out:
        raise ValueError("clips is empty; pass None for an endless generated movie")
    return out


def _playlist_clips(s: SimSettings) -> tuple[ClipSet, list[np.ndarray], list[str]]:
    """The clip set ``s.clips`` and its playlist as clips (repeats share one array) and names."""
    from cortexcast.daq.playlist import MANIFEST, PlaylistError, load_clip_set

    clip_set = load_clip_set(s.clips)  # PlaylistError naming the file and the fix
    if abs(clip_set.stim_rate_hz - s.stim_rate_hz) > 1e-6:
        raise PlaylistError(
            f"{clip_set.folder}: the clips are for {clip_set.stim_rate_hz:g} Hz ({MANIFEST} "
            f"stim_rate_hz) but [daq.sim] stim_rate_hz is {s.stim_rate_hz:g}: "
            f"set [daq.sim] stim_rate_hz = {clip_set.stim_rate_hz:g}, or make the clips for "
            "this rate")
    names = [e.clip for e in clip_set.entries]
    return clip_set, [clip_set.clip(name) for name in names], names


class SimulatedRig(AcquisitionSource):
    """A seeded two-photon microscope over mouse V1 while the mouse watches movies.

    ``clips`` (in memory, named by their position) wins over ``settings.clips``; only a
    clip set from ``settings.clips`` is announced over UDP (see the module's docstring).
    """

    def __init__(self, settings: SimSettings = SimSettings(),
                 clips: Sequence[np.ndarray] | None = None) -> None:
        s = settings
        self.settings = s
        self.clip_set: ClipSet | None = None
        self._clip_names: list[str] | None = None
        if clips is None and s.clips:
            self.clip_set, clips, self._clip_names = _playlist_clips(s)
        self.clips = None if clips is None else _check_clips(clips)
        self._announcer: RigAnnouncer | None = None
        self.meta = load_mouse(s.mouse)
        self.dt = 1.0 / s.imaging_rate_hz
        # Neurons run at least at the stimulus rate: a slower microscope integrates several
        # neural steps per imaging frame (one step per frame when the rates match).
        self.substeps = max(1, math.ceil(s.stim_rate_hz / s.imaging_rate_hz - 1e-9))
        self.dt_neural = self.dt / self.substeps
        self.latency_frames = int(round(s.latency_s / self.dt_neural))
        animal = (s.seed, s.mouse_index)
        self.layout: Layout = build_layout(self.meta, s.n_neurons,
                                           (s.frame_height, s.frame_width),
                                           s.soma_diameter_um, _rng(*animal, _LAYOUT))
        self.bank = FilterBank(s.rf_scale)
        src = self.layout.source_index
        rf_yx = retinotopy(self.layout.coords_um, self.meta.coords, _rng(*animal, _RF))
        pop = make_population(
            self.bank, rf_yx, self.meta.resp_mean[src], self.meta.resp_std[src],
            mean_rate_hz=s.mean_rate_hz, running_gain=s.running_gain,
            shared_variability=s.shared_variability, dff_per_spike=s.dff_per_spike,
            dt=self.dt_neural, rng=_rng(*animal, _POP), complex_fraction=s.complex_fraction,
            nonvisual_fraction=s.nonvisual_fraction, weak_fraction=s.weak_fraction,
            weak_drive=s.weak_drive, pupil_gain=s.pupil_gain)
        calib = MovieGenerator(load_pool("all"), _rng(*animal, _CAL), 30.0, 1.0, 4.0,
                               self.meta.video_mean, self.meta.video_std)
        self.population: Population = calibrate(pop, self.bank, calib.clip(CALIBRATION_FRAMES),
                                                self.latency_frames)
        self._scope_animal_key = (*animal, _SCOPE)
        self._images = load_pool(s.images) if self.clips is None else ()
        self._gray = self.bank(np.full(STIM_SHAPE, round(self.meta.video_mean), np.uint8)).copy()
        self._closed = False
        self._rois = None
        self._truth: dict[str, np.ndarray] = {}
        self.microscope: Microscope | None = None  # made afresh by each events() session

    # ------------------------------------------------------------------ interface
    def __enter__(self) -> "SimulatedRig":
        self._closed = False
        return self

    def stop(self) -> None:
        """End :meth:`events` at its next frame (any thread; ``close`` does the same)."""
        self._closed = True

    def close(self) -> None:
        """Stop, and close the announcing sockets (idempotent, any thread)."""
        self.stop()
        announcer = self._announcer
        if announcer is not None:
            announcer.close()

    def status(self) -> dict[str, int]:
        """Datagrams announced and failed (with a clip set): the daq's heartbeat shows them."""
        return {} if self._announcer is None else self._announcer.status()

    @property
    def n_neurons(self) -> int:
        return self.layout.n_neurons

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.layout.frame_shape

    @property
    def truth(self) -> dict[str, np.ndarray]:
        """Ground truth of the last imaging frame yielded: ``dff``, ``calcium``, ``spikes``,
        ``rate`` (Hz), each (N,), in ROI order."""
        return self._truth

    def rois(self) -> ROISet:
        """The ground-truth footprints as an ROISet (same neuron order as everything else)."""
        if self._rois is None:
            from cortexcast.core.rois import from_masks

            fp = self.layout.footprints
            h, w = self.frame_shape
            sums = np.asarray(fp.sum(axis=1)).ravel()
            masks = sp.csr_matrix(sp.diags(1.0 / sums) @ fp, dtype=np.float32)
            y, x = np.divmod(masks.indices, w)
            rows = np.repeat(np.arange(masks.shape[0]), np.diff(masks.indptr))
            cy = np.bincount(rows, masks.data * y, minlength=masks.shape[0])
            cx = np.bincount(rows, masks.data * x, minlength=masks.shape[0])
            self._rois = from_masks(masks, (h, w), np.stack([cy, cx], 1).astype(np.float32))
        return self._rois

    def eval_mask(self) -> np.ndarray:
        """36×64 bool: where the neurons' receptive fields lie."""
        return coverage_mask(self.population)

    # ------------------------------------------------------------------ the session
    def _new_microscope(self) -> Microscope:
        s = self.settings
        return Microscope(s, self.layout, _rng(*self._scope_animal_key),
                          _rng(s.session_seed, s.seed, s.mouse_index, _SCOPE_SESSION))

    def _stimuli(self) -> Iterator[tuple[np.ndarray, str, int]]:
        if self.clips is not None:
            names = self._clip_names
            for k, clip in enumerate(self.clips):
                name = str(k) if names is None else names[k]
                for f in range(clip.shape[0]):
                    yield clip[f], name, f
            return
        s = self.settings
        movie = MovieGenerator(self._images, _rng(s.session_seed, _MOVIE), s.stim_rate_hz,
                               s.scene_min_s, s.scene_max_s, self.meta.video_mean,
                               self.meta.video_std)
        while True:
            pixels, name, k = movie.next_frame()
            yield pixels, f"{name}#{movie.scene_count}", k

    def events(self) -> Iterator[Event]:
        """Yield events until ``duration_s`` has passed, the clips have ended, or closed.

        Each call starts the session afresh (same seeds: the same events).
        """
        s = self.settings
        if self.clip_set is not None:
            if self._announcer is not None:
                self._announcer.close()
            self._announcer = RigAnnouncer(s.stimulus_to, s.eye_to)
        try:
            yield from self._events(self._announcer if self.clip_set is not None else None)
        except (ValueError, FloatingPointError, MemoryError) as exc:
            raise AcquisitionError(f"simulated rig failed: {exc}") from exc
        finally:
            if self._announcer is not None:
                self._announcer.close()

    def retina(self, pixels: np.ndarray, eye: np.ndarray) -> np.ndarray:
        """The image on the retina: the screen seen from eye position ``eye`` (x, y, eye-std
        units): retina(r, c) = screen(r + gaze_y, c + gaze_x), gaze = eye_shift_px × eye;
        beyond the screen's edge, the mean grey (bilinear, sub-pixel). With
        ``eye_rotation_deg`` the image also turns about the screen centre by that many
        degrees per unit of vertical eye position, and ``retina_blur_px`` blurs it."""
        s = self.settings
        gx, gy = s.eye_shift_px * np.asarray(eye, np.float64)
        img = np.asarray(pixels, np.float32)
        grey = float(self.meta.video_mean)
        if s.eye_rotation_deg > 0:
            th = np.deg2rad(s.eye_rotation_deg * float(eye[1]))
            rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
            centre = (np.array(img.shape, np.float64) - 1) / 2
            # output (r, c) samples the screen at rot @ ((r, c) - centre) + centre + gaze
            offset = centre + np.array([gy, gx]) - rot @ centre
            out = ndimage.affine_transform(img, rot, offset=offset, order=1, mode="constant",
                                           cval=grey)
        else:
            out = ndimage.shift(img, (-gy, -gx), order=1, mode="constant", cval=grey)
        if s.retina_blur_px > 0:
            out = ndimage.gaussian_filter(out, s.retina_blur_px, mode="nearest")
        return out

    def _events(self, announcer: RigAnnouncer | None) -> Iterator[Event]:
        s = self.settings
        key = (s.session_seed, s.seed, s.mouse_index)
        behavior = BehaviorModel(self.meta, self.dt, _rng(*key, _BEHAVIOR),
                                 s.eye_tracking_noise, _rng(*key, _TRACKING),
                                 s.eye_tracking_offset)
        spikes_rng = _rng(*key, _SPIKES)
        pd_rng = _rng(*key, _PHOTODIODE)
        state = NeuralState(self.population, self.latency_frames)
        scope = self.microscope = self._new_microscope()
        stimuli = self._stimuli()
        n_stim = None if self.clips is None else sum(c.shape[0] for c in self.clips)
        max_frames = None if s.duration_s is None else max(1, round(s.duration_s / self.dt))
        period = 1.0 / s.stim_rate_hz
        n_sub, sub_dt = self.substeps, self.dt_neural
        decay = math.exp(-sub_dt / s.calcium_decay_s)
        rise = 1.0 - math.exp(-sub_dt / s.calcium_rise_s)
        k_pd = s.photodiode_samples
        pd_phase = (np.arange(k_pd) + 0.5) / k_pd * self.dt
        moving_eye = s.eye_shift_px > 0 or s.eye_rotation_deg > 0 or s.retina_blur_px > 0
        drive = self._gray
        screen = np.full(STIM_SHAPE, round(self.meta.video_mean), np.float32)
        fetched: dict[int, tuple[np.ndarray, str, int]] = {}  # read ahead for the neurons

        def stimulus(j: int) -> tuple[np.ndarray, str, int]:
            while j not in fetched:
                fetched[len(fetched) + first[0]] = next(stimuli)
            return fetched[j]

        first = [0]  # index of the oldest stimulus frame still held in ``fetched``
        shown = -1  # stimulus frame on screen
        nxt = 0  # next stimulus frame to show (as an event)
        seen = 0  # next stimulus frame the neurons see
        pacer = FramePacer(s.imaging_rate_hz) if s.paced else None
        i = 0
        compute_ns = 0.0  # recent time to compute one frame (a slowly decaying maximum)
        while not self._closed and (max_frames is None or i < max_frames):
            if pacer is not None and i > 0:
                pacer.rest(i, compute_ns)
            computing = time.monotonic_ns()
            t = i * self.dt
            mid = t + self.dt / 2
            new: list[StimulusFrame] = []
            while (n_stim is None or nxt < n_stim) and s.monitor_delay_s + nxt * period <= mid:
                pixels, clip, clip_frame = stimulus(nxt)
                new.append(StimulusFrame(nxt, s.monitor_delay_s + nxt * period, pixels,
                                         clip, clip_frame))
                shown = nxt
                nxt += 1
            if n_stim is not None and nxt >= n_stim and (
                    shown < 0 or s.monitor_delay_s + (shown + 1) * period <= mid):
                # The last clip frame has left the screen before this imaging frame's middle:
                # its flips still happened (and are announced), the session ends here.
                if announcer is None:
                    yield from new
                elif new:
                    announcer.flips([(f.index, f.clip, f.clip_frame, f.t) for f in new])
                return
            beh = behavior.step()
            dff = None
            spikes = None
            for k in range(n_sub):
                when = t + (k + 0.5) * sub_dt
                acc, count = None, 0
                while (n_stim is None or seen < n_stim) and \
                        s.monitor_delay_s + seen * period <= when:
                    pixels = stimulus(seen)[0]
                    acc = pixels.astype(np.float32) if acc is None else acc + pixels
                    count += 1
                    seen += 1
                if acc is not None:  # the bank is linear: filter the mean of the frames shown
                    screen = acc / count if count > 1 else acc
                if moving_eye:
                    drive = self.bank(self.retina(screen, beh.eye)).copy()
                elif acc is not None:
                    drive = self.bank(screen).copy()
                state.step(drive, beh.run_state, beh.pupil_z, beh.latent, sub_dt, decay, rise,
                           spikes_rng)
                if n_sub > 1:  # the microscope integrates over its frame
                    dff = state.dff / n_sub if dff is None else dff + state.dff / n_sub
                    spikes = state.spikes if spikes is None else spikes + state.spikes
            for j in [j for j in fetched if j < min(nxt, seen)]:
                del fetched[j]
            first[0] = min(nxt, seen)
            if n_sub == 1:
                dff, spikes = state.dff, state.spikes
            pixels = scope.render(t, self.dt, dff, beh.run_state)
            # photodiode: square wave toggled by every flip, seen after the monitor delay
            on = np.floor((t + pd_phase - s.monitor_delay_s) / period).astype(np.int64)
            if n_stim is not None:
                on = np.minimum(on, n_stim - 1)
            level = np.where(on < 0, PHOTODIODE_LOW_V,
                             np.where(on % 2 == 0, PHOTODIODE_HIGH_V, PHOTODIODE_LOW_V))
            pd = (level + pd_rng.normal(0.0, s.photodiode_noise_v, k_pd)).astype(np.float32)
            compute_ns = max(0.95 * compute_ns, time.monotonic_ns() - computing)
            t_mono = pacer.wait(i) if pacer is not None else time.monotonic_ns()
            if self._closed:
                return
            self._truth = {"dff": np.array(dff, np.float32), "calcium": state.calcium.copy(),
                           "spikes": spikes, "rate": state.rate}
            if announcer is None:
                yield from new
                behaviour = beh.as_dict()
            else:  # the stimulus computer and the eye tracker tell the daq themselves
                if new:
                    announcer.flips([(f.index, f.clip, f.clip_frame, f.t) for f in new])
                announcer.eye(t, beh.pupil, beh.pupil_x, beh.pupil_y)
                behaviour = {"running": beh.running}
            # The sync lines are sampled during the frame, so (as on a rig) they are known
            # before the frame's pixels: a consumer that pairs them never waits.
            yield SyncEvent(i, t, shown,
                            t_flip=None if shown < 0 else s.monitor_delay_s + shown * period,
                            photodiode=pd, behavior=behaviour)
            yield ImagingFrame(i, t, pixels, {"t_mono_ns": int(t_mono), "shift": scope.shift})
            i += 1
