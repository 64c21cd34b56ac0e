"""``cortexcast train --method ridge`` needs no torch (the ``train`` extra's heaviest part).

Each check runs in a fresh interpreter whose import system refuses ``torch``, so an import of
torch anywhere on the ridge path (the training package, ridge, its export, the CLI) fails it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BLOCK_TORCH = """
import sys

class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"torch is blocked in this test (imported: {name})")
        return None

sys.meta_path.insert(0, _NoTorch())
"""


def _run_without_torch(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True,
                          text=True, timeout=300)


def test_ridge_modules_import_without_torch() -> None:
    proc = _run_without_torch("""
import cortexcast.decoder.training
import cortexcast.decoder.training.common
import cortexcast.decoder.training.features
import cortexcast.decoder.training.ridge
import cortexcast.decoder.training.ridge_export
import cortexcast.decoder.training.ridge_fit
import cortexcast.decoder.training.synthetic
import cortexcast.decoder.training.windows
import cortexcast.app.offline_commands
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
""")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_train_method_ridge_runs_without_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from cortexcast.decoder.training.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "mouse", neurons=12,
                                   tiers={"train": 6, "oracle": 2}, length=40, padded=40)
    model = tmp_path / "ridge.onnx"
    proc = _run_without_torch(f"""
from cortexcast.app.cli import main
rc = main(["train", "--method", "ridge", "--data", {str(data)!r}, "--out", {str(model)!r},
           "--window", "3", "--lag", "1", "--readout", "8", "--no-progress"])
assert rc == 0, rc
assert not [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
""")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert model.is_file() and model.with_suffix(".norm.npz").is_file()
