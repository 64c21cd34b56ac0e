"""The display's wire format to browsers, composites, saving, per-browser newest-only, CLI."""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import pytest
from PIL import Image

from cortexcast.core.config import ConfigError
from cortexcast.display.cli import register, settings_from_args
from cortexcast.display.render import FrameSaver, compose, decode_frame, encode_frame
from cortexcast.display.settings import DisplaySettings
from cortexcast.display.state import View
from cortexcast.display.web import Client, Hub

H, W = 36, 64


def make_view(version: int = 1, recon: np.ndarray | None = None) -> View:
    rng = np.random.default_rng(version)
    stim = rng.integers(0, 256, (H, W)).astype(np.uint8)
    return View(version, stim, 7, recon, 7 if recon is not None else None, 9, 2, recon is not None)


def test_frame_round_trip_rounds_and_clips_the_reconstruction() -> None:
    recon = np.full((H, W), 100.4, np.float32)
    recon[0, :4] = [-5.0, 255.6, np.nan, 127.5]
    view = make_view(recon=recon)
    header, stim, rec = decode_frame(encode_frame(view))
    assert header["h"] == H and header["w"] == W and header["stim_frame"] == 7
    assert header["has_stim"] and header["has_recon"] and header["paired"]
    np.testing.assert_array_equal(stim, view.stimulus)
    assert rec[0, :4].tolist() == [0, 255, 0, 128] and rec[1, 0] == 100


def test_missing_reconstruction_is_flagged_and_zero() -> None:
    header, _, rec = decode_frame(encode_frame(make_view()))
    assert not header["has_recon"] and header["recon_stim_frame"] is None
    assert not rec.any()


def test_compose_is_side_by_side_and_scaled() -> None:
    recon = np.full((H, W), 200.0, np.float32)
    view = make_view(recon=recon)
    img = compose(view, 3)
    assert img.shape == (H * 3, (2 * W + 1) * 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[::3, : W * 3 : 3], view.stimulus)
    assert (img[:, (W + 1) * 3:] == 200).all()


@pytest.mark.parametrize("target", ["out.gif", "frames"])
def test_saver_writes_gif_or_png_series(tmp_path, target) -> None:
    saver = FrameSaver(tmp_path / target, fps=30)
    frames = [compose(make_view(v, recon=np.full((H, W), 10.0 * v, np.float32)), 2)
              for v in range(1, 4)]
    for f in frames:
        saver.add(f)
    saver.close()
    if target.endswith(".gif"):
        with Image.open(tmp_path / target) as gif:
            assert gif.n_frames == 3 and gif.size == (frames[0].shape[1], frames[0].shape[0])
            gif.seek(2)
            np.testing.assert_array_equal(np.asarray(gif.convert("L")), frames[2])
    else:
        pngs = sorted((tmp_path / target).glob("frame_*.png"))
        assert len(pngs) == 3
        np.testing.assert_array_equal(np.asarray(Image.open(pngs[1])), frames[1])


class FakeWS:
    def __init__(self) -> None:
        self.closed = False
        self.sent: list[object] = []

    async def send_str(self, s: str) -> None:
        self.sent.append(s)

    async def send_bytes(self, b: bytes) -> None:
        self.sent.append(b)
        self.closed = len(self.sent) >= 2  # stop the pump after one round


def test_client_keeps_only_the_newest_frame() -> None:
    async def scenario() -> Client:
        client = Client(FakeWS())  # type: ignore[arg-type]
        client.offer_frame(b"old")
        client.offer_frame(b"new")
        client.offer_status("{}")
        await asyncio.wait_for(client.pump(), 2)
        return client

    client = asyncio.run(scenario())
    assert client.ws.sent == ["{}", b"new"]  # type: ignore[attr-defined]
    assert client.replaced == 1 and client.sent == 1


def test_hub_stats_count_clients() -> None:
    hub = Hub()
    hub.publish_status({"shown": 1})
    assert hub.latest_status is not None and '"type":"status"' in hub.latest_status
    assert hub.stats() == {"clients": 0, "connections": 0, "frames_sent": 0,
                           "frames_replaced": 0}


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    register(p.add_subparsers())
    return p.parse_args(["display", *argv])


def test_cli_reads_the_display_table_and_flags_win(tmp_path) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text('[display]\nport = 9000\nheadless = true\nscale = 4\n'
                   'stimulus_from = "tcp://127.0.0.1:7000"\n')
    s = settings_from_args(_parse(["--config", str(cfg), "--port", "0", "--duration", "2",
                                   "--save", "x.gif"]))
    assert s == DisplaySettings(port=0, headless=True, scale=4, duration_s=2.0, save="x.gif",
                                stimulus_from="tcp://127.0.0.1:7000")
    assert _parse([]).func.__name__ == "run"


def test_cli_config_errors_name_the_key(tmp_path) -> None:
    cfg = tmp_path / "rig.toml"
    cfg.write_text("[display]\nfps = 'fast'\n")
    with pytest.raises(ConfigError, match="fps"):
        settings_from_args(_parse(["--config", str(cfg)]))
    with pytest.raises(ConfigError, match="port"):
        settings_from_args(_parse(["--port", "70000"]))
