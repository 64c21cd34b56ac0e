"""Training for ``cortexcast train`` and ``reconstruct --method inversion``.

torch is imported by train, mouse, multi_mouse, fit, residual, device and inversion/ only;
``--method ridge`` (common, ridge, ridge_fit, ridge_export, windows, features, synthetic) runs
without it (tests/test_ridge_without_torch.py).
"""
