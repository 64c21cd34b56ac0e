"""The decoder's ridge branch picks alpha as ``--method ridge`` does (issue 12).

Gain 0 (the plain ridge branch) has its alpha chosen on every validation trial, both halves;
an eye-shift gain on the early-stopping half only, so the selection half stays unseen when
the shift is compared with gain 0 there.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from cortexcast.decoder.training import fit  # noqa: E402
from cortexcast.decoder.training.common import TrainSettings  # noqa: E402
from cortexcast.decoder.training.mouse import prepare_mouse  # noqa: E402
from cortexcast.decoder.training.synthetic import write_synthetic_dataset  # noqa: E402


def test_unshifted_alpha_uses_both_validation_halves(tmp_path, monkeypatch) -> None:
    data = write_synthetic_dataset(tmp_path / "m", neurons=30, length=60, padded=70,
                                   tiers={"train": 6, "oracle": 4, "final_test_main": 1})
    seen: list[int] = []
    real = fit.choose_alpha

    def spy(per_clip, grid, default):
        seen.append(per_clip.shape[0])
        return real(per_clip, grid, default)

    monkeypatch.setattr(fit, "choose_alpha", spy)
    s = TrainSettings(data=str(data), out=str(tmp_path / "x.onnx"), lag=3, readout=8,
                      pixels=16, gain=False, neuron_weights=False, eye_shifts=(0.0, 1.5),
                      progress=False)
    m = prepare_mouse(str(data), s, torch.device("cpu"))
    stop, select = len(m.val.starts), len(m.select.starts)
    assert m.select is not m.val and stop >= 1 and select >= 1
    assert seen[0] == stop + select  # gain 0 first: every validation trial
    assert set(seen[1:]) == {stop}   # the shifts: the early-stopping half only


def test_card_method_says_gain_only_when_kept() -> None:
    from cortexcast.decoder.training.residual import ResidualShape

    kept = ResidualShape(10, 4, 2, 8, 16, eye_shift_px=1.5, gain=True).describe()
    dropped = ResidualShape(10, 4, 2, 8, 16, eye_shift_px=1.5).describe()
    assert "gain divided out" in kept and "gain" not in dropped
    assert "eye shift 1.5" in dropped
    assert "eye shift" not in ResidualShape(10, 4, 2, 8, 16, behavior=False).describe()
