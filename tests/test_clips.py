"""`cortexcast clips`: a calibration clip set that round-trips through cortexcast.daq.playlist,
keeps test images out of training clips, interleaves repeats, and whose AVI movies the real
ffmpeg binary decodes to the upscaled clips."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cortexcast.app.cli import main
from cortexcast.daq.playlist import (COLUMNS, ClipSet, PlaylistEntry, PlaylistError,
                                     load_clip_set)

SMALL = ["--train-clips", "3", "--test-clips", "2", "--repeats", "2", "--validation-clips", "2",
         "--clip-seconds", "0.5",
         "--monitor", "256x144", "--jobs", "1"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clips") / "set"
    assert main(["clips", "--out", str(out), "--seed", "5", *SMALL]) == 0
    return out


def test_folder_round_trips_through_load_clip_set(clip_dir: Path) -> None:
    cs = load_clip_set(clip_dir)
    assert isinstance(cs, ClipSet) and cs.stim_rate_hz == 30.0
    manifest = json.loads((clip_dir / "manifest.json").read_text())
    assert cs.manifest == manifest and manifest["format"] == "cortexcast-clips-1"
    assert (manifest["seed"], manifest["repeats"], manifest["monitor"]) == (
        5, 2, {"width": 256, "height": 144})
    header = (clip_dir / "playlist.csv").read_text().splitlines()[0]
    assert header == ",".join(COLUMNS)
    assert len(cs.entries) == 3 + 2 + 2 * 2
    assert [e.index for e in cs.entries] == list(range(9))
    assert all(isinstance(e, PlaylistEntry) and e.frames == 15 for e in cs.entries)
    names = {e.clip for e in cs.entries}
    assert names == {"train_0000", "train_0001", "train_0002", "test_0000", "test_0001",
                     "validation_0000", "validation_0001"}
    assert all(e.repeat == 0 for e in cs.entries if e.tier == "validation")  # shown once
    assert set(manifest["clips"]) == names
    for name in names:
        a = cs.clip(name)
        assert a.shape == (15, 36, 64) and a.dtype == np.uint8
        assert cs.clip(name) is a  # cached
        np.testing.assert_array_equal(a, np.load(clip_dir / f"{name}.npy"))
        assert cs.tier_of(name) == name.split("_")[0] == manifest["clips"][name]["tier"]
        assert a.std() > 5  # a movie, not a blank
    for e in cs.entries:
        assert e.movie == f"movies/{e.clip}.avi" and (clip_dir / e.movie).is_file()
    assert "playlist.csv" in (clip_dir / "README.txt").read_text()


def test_manifest_seed_regenerates_the_clip(clip_dir: Path) -> None:
    from cortexcast.daq.sim.stimulus import make_clips

    manifest = json.loads((clip_dir / "manifest.json").read_text())
    gen = manifest["generator"]
    info = manifest["clips"]["test_0001"]
    clips, images = make_clips(info["tier"], 1, info["frames"], info["seed"],
                               manifest["stim_rate_hz"], video_mean=gen["video_mean"],
                               video_std=gen["video_std"])
    np.testing.assert_array_equal(clips[0], np.load(clip_dir / "test_0001.npy"))
    assert list(images[0]) == info["images"]


def test_validation_and_test_clip_images_are_disjoint_from_training_images(
        clip_dir: Path) -> None:
    from cortexcast.daq.sim.stimulus import image_names

    clips = json.loads((clip_dir / "manifest.json").read_text())["clips"]
    seen = {tier: {im for c in clips.values() if c["tier"] == tier for im in c["images"]}
            for tier in ("train", "validation", "test")}
    assert all(seen.values())
    assert not seen["train"] & seen["test"] and not seen["train"] & seen["validation"]
    assert not seen["validation"] & seen["test"]
    for tier, images in seen.items():
        assert images <= set(image_names(tier))


def test_repeats_are_interleaved(tmp_path: Path) -> None:
    out = tmp_path / "big"
    assert main(["clips", "--out", str(out), "--train-clips", "12", "--test-clips", "3",
                 "--repeats", "3", "--clip-seconds", "0.1", "--no-movies",
                 "--validation-clips", "0"]) == 0
    entries = load_clip_set(out).entries
    assert len(entries) == 12 + 3 * 3
    train = [e.clip for e in entries if e.tier == "train"]
    assert sorted(train) == [f"train_{k:04d}" for k in range(12)]  # each exactly once
    assert all(e.movie == "" for e in entries) and not (out / "movies").exists()
    for b in range(3):  # block b: every test clip's repeat b, before any repeat b + 1
        pos = [i for i, e in enumerate(entries) if e.tier == "test" and e.repeat == b]
        assert sorted(entries[i].clip for i in pos) == ["test_0000", "test_0001", "test_0002"]
        if b:
            assert min(pos) > max(i for i, e in enumerate(entries)
                                  if e.tier == "test" and e.repeat == b - 1)
    # training clips sit between the repeats, not all before or after them
    first_test = min(i for i, e in enumerate(entries) if e.tier == "test")
    last_test = max(i for i, e in enumerate(entries) if e.tier == "test")
    between = [e for e in entries[first_test:last_test] if e.tier == "train"]
    assert len(between) >= 4
    assert all(a.clip != b.clip for a, b in zip(entries, entries[1:]))


def _decode(path: Path, width: int, height: int) -> np.ndarray:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    r = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                        "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and not r.stderr, r.stderr.decode(errors="replace")
    return np.frombuffer(r.stdout, np.uint8).reshape(-1, height, width)


def test_movie_decodes_with_ffmpeg_to_the_upscaled_clip(clip_dir: Path) -> None:
    clip = np.load(clip_dir / "test_0000.npy")
    video = _decode(clip_dir / "movies" / "test_0000.avi", 256, 144)
    assert video.shape == (15, 144, 256)
    # 256x144 holds the 64x36 clip x4 exactly
    want = np.repeat(np.repeat(clip, 4, axis=1), 4, axis=2).astype(np.int16)
    err = np.abs(video.astype(np.int16) - want)
    assert err.mean() < 2.0 and np.percentile(err, 99) < 12


def test_movie_letterboxes_on_mid_grey(tmp_path: Path) -> None:
    from cortexcast.app.clip_video import write_movie

    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (4, 36, 64), dtype=np.uint8)
    clip[2] = clip[1]  # a repeated frame reuses its JPEG
    # x3 = 192x108 centred at (top 21, left 12); 59.94 Hz is stored as 2997/50
    size = write_movie(tmp_path / "m.avi", clip, 216, 150, 59.94)
    assert size == (tmp_path / "m.avi").stat().st_size
    video = _decode(tmp_path / "m.avi", 216, 150).astype(np.int16)
    assert video.shape == (4, 150, 216)
    inner = video[:, 21:129, 12:204]
    want = np.repeat(np.repeat(clip, 3, axis=1), 3, axis=2)
    assert np.abs(inner - want)[:, 2:-2, 2:-2].mean() < 6  # random noise: JPEG's worst case
    # 8x8 JPEG blocks wholly outside the picture are flat mid grey
    border = np.concatenate([video[:, :16].ravel(), video[:, -8:].ravel(),
                             video[:, :, :8].ravel(), video[:, :, -8:].ravel()])
    assert np.abs(border - 128).max() <= 1


def test_existing_folder_needs_force(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "set"
    args = ["clips", "--out", str(out), "--train-clips", "1", "--test-clips", "1",
            "--clip-seconds", "0.1", "--no-movies", "--validation-clips", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err
    before = (out / "playlist.csv").read_text()
    assert main([*args, "--force", "--seed", "3", "--train-clips", "2"]) == 0
    assert (out / "playlist.csv").read_text() != before
    assert len(load_clip_set(out).entries) == 2 + 1 + 3


def test_playlist_naming_a_missing_clip_is_refused(clip_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken, ignore=shutil.ignore_patterns("movies"))
    (broken / "train_0001.npy").unlink()
    with pytest.raises(PlaylistError) as exc:
        load_clip_set(broken)
    msg = str(exc.value)
    assert "train_0001" in msg and str(broken / "playlist.csv") in msg and "rewrite" in msg
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("text, words", [
    ("index,clip,tier\n0,train_0000,train\n", ["header", "repeat, frames"]),
    ("", ["header", "(empty)"]),
    ("index,clip,tier,repeat,frames,movie\n0,train_0000,train,0,many,\n", ["frames", "line 2"]),
    ("index,clip,tier,repeat,frames,movie\n1,train_0000,train,0,15,\n", ["index 1", "line 2"]),
    ("index,clip,tier,repeat,frames,movie\n0,../x,train,0,15,\n", ["clip name"]),
    ("index,clip,tier,repeat,frames,movie\n0,train_0000,oracle,0,15,\n", ["tier 'oracle'"]),
    ("index,clip,tier,repeat,frames,movie\n0,train_0000,train,0,15\n", ["fields"]),
    ("index,clip,tier,repeat,frames,movie\n0,train_0000,train,0,99,\n", ["99", "frames"]),
    ("index,clip,tier,repeat,frames,movie\n", ["no rows"]),
])
def test_corrupt_playlist_is_refused(clip_dir: Path, tmp_path: Path, text: str,
                                     words: list[str]) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken, ignore=shutil.ignore_patterns("movies"))
    (broken / "playlist.csv").write_text(text)
    with pytest.raises(PlaylistError) as exc:
        load_clip_set(broken)
    msg = str(exc.value)
    assert "playlist.csv" in msg or "train_0000.npy" in msg
    for w in words:
        assert w in msg


def test_bad_clip_shape_and_missing_folder(clip_dir: Path, tmp_path: Path) -> None:
    import shutil

    with pytest.raises(PlaylistError, match="cortexcast clips --out"):
        load_clip_set(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken, ignore=shutil.ignore_patterns("movies"))
    np.save(broken / "test_0000.npy", np.zeros((15, 36, 63), np.uint8))
    with pytest.raises(PlaylistError, match=r"test_0000\.npy.*\(frames, 36, 64\) uint8"):
        load_clip_set(broken)


def test_bad_options_are_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["clips", "--out", str(tmp_path / "a"), "--monitor", "50x20"]) == 2
    assert "--monitor" in capsys.readouterr().err
    assert main(["clips", "--out", str(tmp_path / "b"), "--repeats", "0"]) == 2
    assert "--repeats" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
