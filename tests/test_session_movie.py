"""Side-by-side stimulus | reconstruction movies: from arrays, and of a recorded session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cortexcast.core.events import Reconstruction, StimulusFrame
from cortexcast.decoder.offline.session_movie import (MovieError, composite, mp4_available,
                                                      session_pairs, write_movie)
from cortexcast.display.render import compose
from cortexcast.display.state import View
from test_export import run_cli, write_recording


def _gif_frames(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        out = []
        for k in range(im.n_frames):
            im.seek(k)
            out.append(np.asarray(im.convert("L")))
        return out


def _frames(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    stim = rng.integers(0, 256, (n, 36, 64)).astype(np.uint8)
    recon = stim.astype(np.float32)[:, ::-1] * 0.8
    return stim, recon


def test_a_gif_of_arrays_is_the_displays_composite(tmp_path) -> None:
    stim, recon = _frames(5)
    recon[2] = np.nan  # a missing reconstruction: a black half, as the display shows it
    assert write_movie(tmp_path / "m.gif", stim, recon, fps=10, scale=2) == 5
    got = _gif_frames(tmp_path / "m.gif")
    assert len(got) == 5 and got[0].shape == (72, 2 * 128 + 2)
    for k in range(5):
        want = compose(View(0, stim[k], k, recon[k], k, None, None, True), 2)
        np.testing.assert_array_equal(got[k], want)
    assert (got[2][:, 130:] == 0).all()
    assert np.array_equal(composite(stim[0], None, 1)[:, 65:], np.zeros((36, 64), np.uint8))


@pytest.mark.skipif(not mp4_available(), reason="imageio-ffmpeg is not installed")
def test_an_mp4_of_arrays(tmp_path) -> None:
    import imageio_ffmpeg

    stim, recon = _frames(12)
    assert write_movie(tmp_path / "m.mp4", stim, list(recon), fps=12, scale=3) == 12
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(tmp_path / "m.mp4"))
    assert frames == 12 and abs(secs - 1.0) < 0.2


def test_bad_requests_are_movie_errors(tmp_path) -> None:
    stim, recon = _frames(3)
    with pytest.raises(MovieError, match=r"\.gif or \.mp4"):
        write_movie(tmp_path / "m.avi", stim, recon)
    with pytest.raises(MovieError, match="pair them first"):
        write_movie(tmp_path / "m.gif", stim, recon[:2])
    with pytest.raises(MovieError, match="no frames"):
        write_movie(tmp_path / "m.gif", stim[:0], recon[:0])


def _session(path: Path) -> Path:
    """Stimulus frames 0..29 at 30 Hz (frame 7 sent twice); reconstructions of the even ones,
    arriving late and out of order, frame 4's twice (the later one wins)."""
    evs: list = []
    for j in range(30):
        px = np.full((36, 64), j * 8, np.uint8)
        evs.append(StimulusFrame(j, 100 + j / 30, px, "a", j))
        if j == 7:
            evs.append(StimulusFrame(j, 100 + j / 30, px + 1, "a", j))
    for j in sorted(range(0, 30, 2), key=lambda j: (j * 7) % 30):
        evs.append(Reconstruction(j, 100 + j / 30 + 0.1, np.full((36, 64), 200.0 - j,
                                                                  np.float32), j + 2))
    evs.append(Reconstruction(4, 200.0, np.full((36, 64), 7.0, np.float32), 6))
    return write_recording(path, evs)


def test_session_frames_are_paired_by_stimulus_frame(tmp_path) -> None:
    rec = _session(tmp_path / "s.ccr")
    pairs = session_pairs(rec)
    assert list(pairs.stim_index) == list(range(30)) and pairs.paired == 15
    assert abs(pairs.fps - 30) < 1e-6
    for j in range(30):
        assert (pairs.stimulus[j] == j * 8).all()  # frame 7: the first one sent
        r = pairs.reconstruction[j]
        assert r is None if j % 2 else (r == (7 if j == 4 else 200 - j)).all()
    part = session_pairs(rec, start_s=0.29, stop_s=0.5, frames=4)
    assert list(part.stim_index) == [9, 10, 11, 12]
    with pytest.raises(MovieError, match="no stimulus frame between"):
        session_pairs(rec, start_s=5.0)


def test_export_movie_command(tmp_path, capsys) -> None:
    rec = _session(tmp_path / "s.ccr")
    assert run_cli("export", "--recording", rec, "--movie", tmp_path / "m.gif",
                   "--movie-frames", "10", "--movie-scale", "1") == 0
    assert "10 stimulus frames, 5 with their reconstruction" in capsys.readouterr().out
    got = _gif_frames(tmp_path / "m.gif")
    assert len(got) == 10 and got[0].shape == (36, 129)
    assert run_cli("export", "--recording", rec, "--movie", tmp_path / "m.webm") == 2
    assert ".gif or .mp4" in capsys.readouterr().err
