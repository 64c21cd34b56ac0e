"""The soak's memory-growth figure from a process's RSS samples."""

from __future__ import annotations

from cortexcast.app.bench_memory import growth, memory_report, warmup_for


def test_growth_compares_the_end_with_just_after_the_warmup() -> None:
    flat = [[float(t), 100.0 + (10.0 if t < 300 else 0.0)] for t in range(0, 3600, 1)]
    g = growth(flat, warmup_for(3600))
    assert g["after_warmup_mb"] == 100.0 and g["end_mb"] == 100.0 and g["growth_pct"] == 0.0
    leaking = [[float(t), 100.0 + t / 100] for t in range(0, 3600)]
    g = growth(leaking, 300.0)
    assert 30 < g["growth_pct"] < 33  # 103 MB after the warm-up -> 136 MB at the end
    assert growth([[0.0, 1.0], [1.0, 1.0]], 300.0) is None  # too short to tell


def test_memory_report_flags_a_leak() -> None:
    ok = [[float(t), 50.0] for t in range(0, 600)]
    leak = [[float(t), 50.0 + t / 10] for t in range(0, 600)]
    rep = memory_report({"daq": {"rss_mb": ok}, "decoder": {"rss_mb": leak}}, 600)
    assert rep["per_process"]["daq"]["growth_pct"] == 0.0
    assert rep["max_growth_pct"] > 5 and not rep["met"]
    assert memory_report({"daq": {"rss_mb": ok}}, 600)["met"]
    assert warmup_for(60) == 20 and warmup_for(3600) == 300
