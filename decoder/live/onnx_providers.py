"""Which onnxruntime is installed and which execution providers it really offers.

``onnxruntime`` (CPU) and ``onnxruntime-gpu`` install the same ``onnxruntime`` module; with
both installed, whichever was installed last owns the files and ``pip`` cannot tell, so the
GPU provider is silently missing. The only working GPU set-up is the GPU package alone,
with CUDA 12 and cuDNN 9 either on the system or from NVIDIA's pip wheels
(``onnxruntime-gpu[cuda,cudnn]``, loaded with ``onnxruntime.preload_dlls()``)::

    pip uninstall -y onnxruntime onnxruntime-gpu
    pip install "onnxruntime-gpu[cuda,cudnn]"

The ``doctor`` prints what this module finds; the decoder refuses a provider that is not
there with the same recipe, and logs the providers a session really runs on (onnxruntime
falls back to the CPU by itself when CUDA's libraries cannot be loaded).
"""

from __future__ import annotations

import importlib.metadata
import logging
from typing import Sequence

log = logging.getLogger(__name__)

#: Distributions that provide the ``onnxruntime`` module.
ONNXRUNTIME_PACKAGES = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml",
                        "onnxruntime-openvino", "onnxruntime-silicon")
GPU_RECIPE = ('pip uninstall -y onnxruntime onnxruntime-gpu && '
              'pip install "onnxruntime-gpu[cuda,cudnn]"')
CUDA = "CUDAExecutionProvider"


def installed_packages() -> dict[str, str]:
    """Installed onnxruntime distributions -> version."""
    found: dict[str, str] = {}
    for name in ONNXRUNTIME_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def available_providers(preload: bool = True) -> list[str]:
    """Providers the installed onnxruntime offers. ``preload``: first load CUDA/cuDNN from
    NVIDIA's pip wheels where onnxruntime-gpu can (>= 1.21), so they count as available."""
    import onnxruntime as ort

    if preload and hasattr(ort, "preload_dlls") and CUDA in ort.get_available_providers():
        try:
            ort.preload_dlls()
        except Exception as exc:  # missing wheels: the system's libraries may still serve
            log.debug("onnxruntime.preload_dlls: %s", exc)
    return list(ort.get_available_providers())


def package_problem(packages: dict[str, str] | None = None) -> str | None:
    """A sentence when the installed onnxruntime packages clash, else None."""
    packages = installed_packages() if packages is None else packages
    if len(packages) > 1:
        return (f"several onnxruntime packages are installed ({', '.join(sorted(packages))}); "
                "they share one module and the last installed wins. Keep one: for a GPU, "
                f"{GPU_RECIPE}")
    if not packages:
        return "onnxruntime is not installed: pip install onnxruntime"
    return None


def missing_provider_message(missing: Sequence[str], available: Sequence[str]) -> str:
    """Why ``missing`` providers cannot be used, and what to do."""
    text = (f"onnxruntime provider(s) {', '.join(missing) or '(none given)'} not available "
            f"here; available: {', '.join(available)}")
    if CUDA in missing:
        problem = package_problem()
        text += (f". {problem}" if problem else
                 f". For CUDA install the GPU package alone: {GPU_RECIPE} (CUDA 12, cuDNN 9 "
                 "and an NVIDIA driver); or use providers = [\"CPUExecutionProvider\"]")
    return text


def report_session(session: object, requested: Sequence[str], what: str) -> list[str]:
    """Log the providers ``session`` runs on; warn when the first requested one is not."""
    used = list(session.get_providers())  # type: ignore[attr-defined]
    if requested and requested[0] not in used:
        log.warning("%s: asked for %s but onnxruntime runs it on %s (it could not load the "
                    "provider's libraries; for CUDA: %s)", what, requested[0],
                    ", ".join(used), GPU_RECIPE)
    else:
        log.info("%s runs on %s", what, used[0] if used else "?")
    return used
