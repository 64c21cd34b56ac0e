"""The doctor's onnxruntime check: which package, which providers, and whether the config's
``[decoder] providers`` are among them (see cortexcast.decoder.live.onnx_providers)."""

from __future__ import annotations

from cortexcast.app.rig_checks import Check, RigFacts
from cortexcast.decoder.live.onnx_providers import (
    CUDA, GPU_RECIPE, available_providers, installed_packages, package_problem,
)


def check_onnxruntime(facts: RigFacts) -> list[Check]:
    packages = installed_packages()
    installed = ", ".join(f"{n} {v}" for n, v in sorted(packages.items())) or "none"
    problem = package_problem(packages)
    if problem and not packages:
        return [Check("onnxruntime", "FAIL", problem, "pip install onnxruntime")]
    available = available_providers()
    checks = [Check("onnxruntime", "WARN" if problem else "OK",
                    f"{installed}; providers: {', '.join(available)}",
                    problem or "")]
    dec = facts.settings.get("decoder")
    wanted = tuple(dec.providers) if dec is not None else ()
    missing = [p for p in wanted if p not in available]
    if missing:
        fix = (GPU_RECIPE + " (then check again)" if CUDA in missing else
               "set [decoder] providers to ones listed above")
        checks.append(Check("onnxruntime", "FAIL", f"[decoder] providers asks for "
                            f"{', '.join(missing)}, which this onnxruntime does not offer",
                            fix))
    return checks
