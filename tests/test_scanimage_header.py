"""ScanImage's header, used: parsed from stand-in files, checked against the decoder,
mROI pages and FastZ volumes turned into frames (or refused), the end of an acquisition
ending the follower, and the acquisition's start (epoch) carried on every frame."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import zmq

from cortexcast.app.rig_checks import RigFacts
from cortexcast.app.scanimage_check import check_daq_header, check_scanimage_header
from cortexcast.daq.process import DaqSettings
from cortexcast.daq.scanimage.header import HeaderError, ScanImageHeader, epoch_unix, parse_epoch
from cortexcast.daq.scanimage.layout import check_header_against
from cortexcast.daq.scanimage.messages import pack_scanimage_message
from cortexcast.daq.scanimage.tiff_source import TiffFollower, TiffSettings
from cortexcast.daq.scanimage.zmq_source import (BridgeSettings, ScanImageStreamSettings,
                                                 bridge_source, scanimage_stream_source)
from cortexcast.daq.source import AcquisitionError
from cortexcast.daq.standins.scanimage_tiff import ScanImageTiffWriter
from polling import wait_for


def _images(n: int, h: int = 6, w: int = 24, c: int = 1, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 30000, (c, h, w)).astype(np.int16) for _ in range(n)]


def _write_images(folder: Path, images: list[np.ndarray], **kw) -> ScanImageTiffWriter:
    w = ScanImageTiffWriter(folder, channels=tuple(range(1, len(images[0]) + 1)), **kw)
    with w:
        for k, img in enumerate(images):
            w.write_image(k, k / 10, img, last=k == len(images) - 1)
    return w


def _follow(folder: Path, **kw) -> tuple[list, TiffFollower]:
    s = TiffSettings(folder=str(folder), start="all", end_after_idle_s=5.0, timeout_s=20.0,
                     **kw)
    src = TiffFollower(s)
    with src:
        return list(src.events()), src


# -- parsing ----------------------------------------------------------------------------------

def test_header_from_a_standin_tiff_has_the_fields_used(tmp_path) -> None:
    w = _write_images(tmp_path, _images(2, c=2), frame_rate_hz=29.5)
    h = ScanImageHeader.from_tiff(w.paths[0])
    assert (h.lines, h.pixels, h.frame_rate_hz, h.channels_saved) == (6, 24, 29.5, (1, 2))
    assert (h.data_type, h.mroi, h.n_slices, h.version) == ("int16", False, 1, "2023.1")
    assert h.epoch == parse_epoch(w.description(1, 0.0, False)) and h.epoch is not None
    assert h.source == str(w.paths[0])
    with tifffile.TiffFile(w.paths[0]) as tf:  # the Software tag says the same
        page = tf.pages.first
        assert ScanImageHeader.from_text(page.software, source=h.source,
                                         description=page.description) == h


def test_epoch_parses_as_scanimage_writes_it() -> None:
    epoch = parse_epoch("frameNumbers = 1\nepoch = [2023  2  6 10 51 13.374]\n")
    assert epoch == "2023-02-06T10:51:13.374"
    assert epoch_unix(epoch) == pytest.approx(
        __import__("datetime").datetime(2023, 2, 6, 10, 51, 13, 374000).timestamp())
    assert parse_epoch("epoch = []") is None


def test_an_unreadable_header_is_an_error_naming_the_file(tmp_path) -> None:
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, np.zeros((4, 4), np.int16), description="hello")
    with pytest.raises(HeaderError, match="plain.tif"):
        ScanImageHeader.from_tiff(plain)
    with pytest.raises(AcquisitionError, match=r"missing\.tif"):
        ScanImageHeader.from_tiff(tmp_path / "missing.tif")
    text = tmp_path / "si.txt"
    text.write_text("SI.hChannels.channelSave = 1\nSI.hRoiManager.pixelsPerLine = 512\n")
    with pytest.raises(HeaderError, match=r"si\.txt.*linesPerFrame"):
        ScanImageHeader.from_file(text)


# -- checks against the decoder ------------------------------------------------------------------

def test_mismatches_name_both_values_and_the_setting(tmp_path) -> None:
    w = _write_images(tmp_path, _images(1), frame_rate_hz=30.047)
    h = ScanImageHeader.from_tiff(w.paths[0])
    assert check_header_against(h, (6, 24), 30.0) == []  # within the tolerance
    shape, rate = check_header_against(h, (512, 512), 15.0)
    assert "6x24" in shape and "512x512" in shape and "[decoder] rois" in shape
    assert "linesPerFrame" in shape
    assert "30.05 Hz" in rate and "frame_rate_hz = 15" in rate and "scanFrameRate" in rate
    (chan,) = check_header_against(h, (6, 24), 30.0, channel=2)
    assert "[daq.tiff] channel = 2" in chan and "[1]" in chan


def test_doctor_and_up_checks(tmp_path) -> None:
    folder = tmp_path / "si"
    _write_images(folder, _images(1), frame_rate_hz=30.0)
    daq = DaqSettings(source="tiff", tiff=TiffSettings(folder=str(folder)))
    dec = SimpleNamespace(rois="rois.npz", frame_rate_hz=15.0)
    facts = RigFacts({}, {"daq": daq, "decoder": dec})
    facts.rois = SimpleNamespace(frame_shape=(6, 24))
    checks = check_scanimage_header(facts)
    assert [c.status for c in checks] == ["FAIL"] and "frame_rate_hz = 15" in checks[0].detail
    assert check_daq_header(daq, (6, 24), 30.0) == []
    assert len(check_daq_header(daq, (7, 24), 30.0)) == 1
    facts.settings["decoder"] = SimpleNamespace(rois="rois.npz", frame_rate_hz=30.0)
    checks = check_scanimage_header(facts)
    assert [c.status for c in checks] == ["OK"] and facts.frame_shape == (6, 24)
    empty = DaqSettings(source="tiff", tiff=TiffSettings(folder=str(tmp_path / "none")))
    assert check_daq_header(empty, (6, 24), 30.0) == []  # nothing to check
    assert check_scanimage_header(RigFacts({}, {"daq": empty}))[0].status == "WARN"


# -- volumes and mROI ---------------------------------------------------------------------------

def test_a_volume_becomes_one_frame_of_its_planes_side_by_side(tmp_path) -> None:
    images = _images(4, w=24)
    _write_images(tmp_path, images, n_slices=3, flyback_frames=1, frames_per_file=5)
    got, src = _follow(tmp_path)
    assert [f.index for f in got] == [0, 1, 2, 3]
    for f in got:
        np.testing.assert_array_equal(f.pixels, images[f.index][0].astype(np.uint16))
        assert f.meta["scanimage_volume"] == f.index + 1
        assert f.t == pytest.approx(f.index / 10)  # the volume's first plane
    assert src.header is not None and src.header.rate_hz == pytest.approx(7.5)


def test_one_plane_of_a_volume(tmp_path) -> None:
    images = _images(3, w=24)
    _write_images(tmp_path, images, n_slices=3)
    got, _ = _follow(tmp_path, plane=2)
    assert len(got) == 3
    for f in got:
        np.testing.assert_array_equal(f.pixels, images[f.index][0][:, 8:16].astype(np.uint16))


def test_volumes_the_follower_cannot_build_are_refused_saying_what_to_change(tmp_path) -> None:
    _write_images(tmp_path / "a", _images(1), n_slices=3, frames_per_slice=2)
    with pytest.raises(HeaderError, match=r"numSlices = 3.*framesPerSlice = 2.*set "
                                          r"framesPerSlice = 1"):
        _follow(tmp_path / "a")
    _write_images(tmp_path / "b", _images(1), n_slices=3)
    with pytest.raises(HeaderError, match=r"\[daq.tiff\] plane = 4.*3 plane"):
        _follow(tmp_path / "b", plane=4)


def test_mroi_pages_are_split_into_strips_without_flyto_lines(tmp_path) -> None:
    images = _images(3, w=24)
    _write_images(tmp_path, images, mroi=3, flyto_lines=5)
    with tifffile.TiffFile(next(tmp_path.glob("*.tif"))) as tf:
        assert tf.pages.first.shape == (3 * 6 + 2 * 5, 8)  # what the follower un-stacks
    got, src = _follow(tmp_path)
    assert len(got) == 3 and src.header is not None and src.header.roi_strips == ((6, 8),) * 3
    for f in got:
        np.testing.assert_array_equal(f.pixels, images[f.index][0].astype(np.uint16))
    one, _ = _follow(tmp_path, mroi_roi=3)
    np.testing.assert_array_equal(one[0].pixels, images[0][0][:, 16:].astype(np.uint16))


def test_mroi_that_cannot_be_joined_is_refused(tmp_path) -> None:
    text = ("SI.hChannels.channelSave = 1\nSI.hRoiManager.linesPerFrame = 10\n"
            "SI.hRoiManager.pixelsPerLine = 8\nSI.hRoiManager.scanFrameRate = 30\n"
            "SI.hRoiManager.mroiEnable = true\n")
    rois = {"RoiGroups": {"imagingRoiGroup": {"rois": [
        {"scanfields": {"pixelResolutionXY": [8, 10]}},
        {"scanfields": {"pixelResolutionXY": [8, 20]}}]}}}
    h = ScanImageHeader.from_text(text, rois)
    (msg,) = check_header_against(h, (10, 16), 30.0)
    assert "different heights [10, 20]" in msg and "mroi_roi" in msg
    assert check_header_against(h, (20, 8), 30.0, mroi_roi=2) == []
    (msg,) = check_header_against(ScanImageHeader.from_text(text), (10, 8), 30.0)
    assert "without ROI group data" in msg and "turn mROI off" in msg


# -- end of acquisition, epoch ---------------------------------------------------------------

def _follow_in_thread(folder: Path, **kw) -> tuple[threading.Thread, list, TiffFollower]:
    # no end_after_idle_s, no timeout: only ScanImage's end marker (or stop()) ends it
    src = TiffFollower(TiffSettings(folder=str(folder), start="all", **kw))
    got: list = []

    def run() -> None:
        with src:
            for frame in src.events():
                got.append(frame)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, got, src


def test_end_of_acquisition_ends_the_follower(tmp_path) -> None:
    images = _images(5)
    t, got, src = _follow_in_thread(tmp_path, channel=2)
    _write_images(tmp_path, [np.stack([i[0], i[0] // 2]) for i in images], frames_per_file=2)
    wait_for(lambda: not t.is_alive(), what="the follower to end at endOfAcquisition")
    assert [f.index for f in got] == [0, 1, 2, 3, 4]  # channel 2 of the last frame included
    np.testing.assert_array_equal(got[-1].pixels, (images[-1][0] // 2).astype(np.uint16))


def test_without_stop_at_end_the_follower_waits_for_the_next_acquisition(tmp_path) -> None:
    t, got, src = _follow_in_thread(tmp_path, stop_at_end=False)
    _write_images(tmp_path, _images(2))
    wait_for(lambda: len(got) == 2, what="both frames published")
    w2 = ScanImageTiffWriter(tmp_path, acquisition=2)  # the next GRAB: numbers restart at 1
    with w2:
        w2.write_image(0, 0.0, _images(1, seed=1)[0], last=True)
    wait_for(lambda: len(got) == 3, what="the next acquisition's frame")
    assert got[2].meta["file"] == "file_00002_00001.tif" and got[2].index == 2
    src.stop()
    wait_for(lambda: not t.is_alive(), what="the follower to stop")


def test_epoch_rides_on_every_frame_and_the_status(tmp_path) -> None:
    w = _write_images(tmp_path, _images(3))
    got, src = _follow(tmp_path)
    epoch = parse_epoch(w.description(1, 0.0, False))
    assert epoch is not None and {f.meta["epoch"] for f in got} == {epoch}
    assert got[0].meta["epoch_unix"] == pytest.approx(epoch_unix(epoch))
    assert src.status()["si_epoch"] == epoch


# -- the stream's and the bridge's header setting ------------------------------------------------

def _stream_frames(src, messages: list[bytes]) -> list:
    return [f for m in messages if (f := src._frame([zmq.Frame(m)], 0)) is not None]


def test_stream_with_a_header_builds_volumes_and_refuses_what_it_cannot(tmp_path) -> None:
    images = _images(2, w=24)
    w = _write_images(tmp_path / "si", images, n_slices=2)
    src = scanimage_stream_source(ScanImageStreamSettings(header=str(w.paths[0])))
    with src:
        msgs = [pack_scanimage_message(2 * k + p + 1, k / 10 + p / 30,
                                       images[k][:, :, p * 12:(p + 1) * 12])
                for k in range(2) for p in range(2)]
        got = _stream_frames(src, msgs)
        assert [f.index for f in got] == [0, 1]
        for f in got:
            np.testing.assert_array_equal(f.pixels, images[f.index][0].astype(np.uint16))
        assert _stream_frames(src, [pack_scanimage_message(5, 0.2, images[0])]) == []
        assert src.bad["shape"] == 1  # a 6x24 page where the header says 6x12
    with pytest.raises(HeaderError, match="channel 2 requested"):
        scanimage_stream_source(ScanImageStreamSettings(header=str(w.paths[0]),
                                                        channel=2)).__enter__()
    with pytest.raises(HeaderError, match="bridge sends the first ROI of the first plane"):
        bridge_source(BridgeSettings(header=str(w.paths[0]))).__enter__()
