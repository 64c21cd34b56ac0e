"""Issue 12 item 4: a core pretrained on several mice, saved, and a new mouse calibrated on it.

Tiny synthetic mice and a few seconds of training: what is checked is the plumbing (the core
file, the shapes it fixes, the members starting from it, the clear errors), not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cortexcast.decoder.live.model_card import ModelError, load_card  # noqa: E402
from cortexcast.decoder.training.core_file import (  # noqa: E402
    load_core, save_core, shared_state, start_from_core)
from cortexcast.decoder.training.synthetic import write_synthetic_dataset  # noqa: E402
from test_train_cli import run_cli  # noqa: E402  (train and evaluate parsers, in process)

TIERS = {"train": 6, "oracle": 2, "final_test_main": 2}


def mouse(root: Path, name: str, seed: int, neurons: int = 40) -> Path:
    return write_synthetic_dataset(root / name, neurons=neurons, seed=seed, tiers=TIERS,
                                   length=60, padded=70)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(folder, core path) of a core pretrained on two mice."""
    root = tmp_path_factory.mktemp("xm")
    a, b = mouse(root, "a", 1), mouse(root, "b", 2, neurons=30)
    out = root / "models" / "pre.onnx"
    assert run_cli("train", "--data", str(a), "--data", str(b), "--out", str(out),
                   "--lag", "3", "--time-budget", "6", "--ensemble", "2", "--readout", "16",
                   "--device", "cpu", "--no-progress") == 0
    return root, out.with_name("pre.core.npz")


def test_core_file_holds_the_shared_weights_and_shapes(pretrained) -> None:
    root, core_path = pretrained
    core = load_core(core_path)
    assert (core.meta.window, core.meta.lag, core.meta.members) == (10, 3, 2)
    assert core.meta.mice == (str((root / "a").resolve()), str((root / "b").resolve()))
    assert core.pix_basis.shape == (36 * 64, core.meta.pixels)
    assert {k.split(".")[0] for k in core.states[0]} == {"mix", "out"}
    card = load_card(root / "models" / "pre.a.onnx")
    assert card.extra["training"]["multi_mouse"]["core"] == str(core_path)


def test_new_mouse_calibrated_on_the_core(pretrained, tmp_path: Path) -> None:
    _, core_path = pretrained
    new = mouse(tmp_path, "new", 7, neurons=35)
    out = tmp_path / "new.onnx"
    assert run_cli("train", "--data", str(new), "--core", str(core_path), "--out", str(out),
                   "--time-budget", "5", "--readout", "16", "--device", "cpu",
                   "--no-progress") == 0
    card = load_card(out)
    assert (card.neurons, card.window, card.lag) == (35, 10, 3)  # the core's window and lag
    tr = card.extra["training"]
    assert tr["core"]["pretrained_on"] == list(load_core(core_path).meta.mice)
    assert tr["members"] == 2 and "core" in card.method
    res = tmp_path / "new.json"
    assert run_cli("evaluate", "--data", str(new), "--model", str(out), "--tier",
                   "final_test_main", "--json", str(res)) == 0
    assert json.loads(res.read_text())["mean"] > 0.3


def test_start_from_core_loads_and_freezes(pretrained) -> None:
    from cortexcast.decoder.training.residual import Member, ResidualShape

    core = load_core(pretrained[1])
    m = core.meta
    shape = ResidualShape(20, m.window, m.lag, 16, m.pixels, m.height, m.width, m.row_features,
                          m.hidden, m.dropout, m.members, m.behavior)
    model = torch.nn.Module()
    model.members = torch.nn.ModuleList(Member(shape) for _ in range(m.members))
    groups = start_from_core(model, core, 1e-3, 0.0)
    for member, state in zip(model.members, core.states):
        got = shared_state(member)
        assert got.keys() == state.keys()
        assert all(np.array_equal(got[k], state[k]) for k in state)
        assert not any(p.requires_grad for p in member.out.parameters())
    assert len(groups) == 1 and all(p.requires_grad for p in groups[0]["params"])
    assert len(start_from_core(model, core, 1e-3, 0.5)) == 2


def test_wrong_lag_and_bad_files_are_clear_errors(pretrained, tmp_path: Path) -> None:
    root, core_path = pretrained
    new = root / "a"
    with pytest.raises(ModelError, match="trained at lag 3"):  # the CLI prints it, exit 2
        run_cli("train", "--data", str(new), "--core", str(core_path), "--lag", "5",
                "--out", str(tmp_path / "x.onnx"), "--device", "cpu")
    with pytest.raises(ModelError, match="does not exist"):
        load_core(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    np.savez(junk, meta=np.array(json.dumps({"format": "other"})))
    with pytest.raises(ModelError, match="not a cortexcast-core"):
        load_core(junk)
    core = load_core(core_path)
    core.pix_basis = core.pix_basis[:, :3]
    save_core(tmp_path / "cut.npz", core)
    with pytest.raises(ModelError, match="frame basis"):
        load_core(tmp_path / "cut.npz")
    assert not list(tmp_path.glob("x*.onnx"))


def test_core_and_several_mice_refused(pretrained, capsys) -> None:
    root, core_path = pretrained
    assert run_cli("train", "--data", str(root / "a"), "--data", str(root / "b"), "--core",
                   str(core_path), "--out", str(root / "y.onnx")) == 2
    assert "one --data" in capsys.readouterr().err


def test_behaviour_mismatch_is_refused(pretrained, tmp_path: Path) -> None:
    root, core_path = pretrained
    with pytest.raises(ModelError, match="pretrained with behaviour"):
        run_cli("train", "--data", str(root / "a"), "--core", str(core_path), "--no-behavior",
                "--out", str(tmp_path / "z.onnx"), "--device", "cpu", "--no-progress")
    assert not (tmp_path / "z.onnx").exists()
