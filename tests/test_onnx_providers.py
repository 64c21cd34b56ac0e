"""Which onnxruntime is installed, which providers it offers, and what the decoder says."""

from __future__ import annotations

import logging

import pytest

from cortexcast.decoder.live import onnx_providers
from cortexcast.decoder.live.model_card import ModelError
from cortexcast.decoder.live.pixel_decoder import PixelDecoder
from cortexcast.decoder.live.process import resolve_model


def test_installed_packages_finds_this_onnxruntime() -> None:
    import onnxruntime

    found = onnxruntime_packages = onnx_providers.installed_packages()
    assert found and onnxruntime.__version__ in onnxruntime_packages.values()


def test_two_onnxruntime_packages_are_a_problem_with_the_fix() -> None:
    problem = onnx_providers.package_problem({"onnxruntime": "1.32", "onnxruntime-gpu": "1.32"})
    assert problem and "onnxruntime, onnxruntime-gpu" in problem
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in problem
    assert onnx_providers.package_problem({"onnxruntime-gpu": "1.32"}) is None
    assert "not installed" in onnx_providers.package_problem({})


def test_decoder_refuses_missing_cuda_with_the_install_recipe() -> None:
    if "CUDAExecutionProvider" in onnx_providers.available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelError, match=r"CUDAExecutionProvider.*onnxruntime-gpu\[cuda,cudnn\]"):
        PixelDecoder(resolve_model("bundled"), providers=("CUDAExecutionProvider",
                                                           "CPUExecutionProvider"))


def test_decoder_logs_the_provider_it_runs_on(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="cortexcast.decoder.live.onnx_providers"):
        dec = PixelDecoder(resolve_model("bundled"))
    assert dec.providers[0] == "CPUExecutionProvider"
    assert any("runs on CPUExecutionProvider" in r.getMessage() for r in caplog.records)


def test_silent_fallback_to_cpu_is_warned(caplog) -> None:
    """onnxruntime runs on the CPU when CUDA's libraries do not load; a real CPU session
    stands for that session here."""
    dec = PixelDecoder(resolve_model("bundled"))
    with caplog.at_level(logging.WARNING):
        used = onnx_providers.report_session(dec.session, ["CUDAExecutionProvider"], "m.onnx")
    assert used == ["CPUExecutionProvider"]
    assert any("asked for CUDAExecutionProvider" in r.getMessage() for r in caplog.records)


def test_doctor_reports_onnxruntime_and_a_missing_cuda(tmp_path) -> None:
    from cortexcast.app.onnx_check import check_onnxruntime
    from cortexcast.app.rig_checks import RigFacts
    from cortexcast.decoder.live.process import DecoderSettings

    (ok,) = check_onnxruntime(RigFacts({}, {}))
    assert ok.status == "OK" and "onnxruntime" in ok.detail and "CPUExecutionProvider" in ok.detail
    if "CUDAExecutionProvider" in onnx_providers.available_providers():
        return
    cuda = DecoderSettings(rois=str(tmp_path / "rois.npz"),
                           providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    checks = check_onnxruntime(RigFacts({}, {"decoder": cuda}))
    assert checks[-1].status == "FAIL" and "CUDAExecutionProvider" in checks[-1].detail
    assert "onnxruntime-gpu" in checks[-1].fix
