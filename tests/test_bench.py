"""The benchmark measures real steps of each architecture and reports them in the README's table form."""

from __future__ import annotations

import pytest

from fer_core.evaluation import bench


def test_bench_table_for_the_tiny_model(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    calls = []

    def quick(fn, n_images: int, min_seconds: float = 2.0) -> float:
        fn()  # the step must really run
        calls.append(n_images)
        return 1000.0

    monkeypatch.setattr(bench, "images_per_second", quick)
    assert bench.main(["--arch", "tiny", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "| tiny |" in out and "precision fp32" in out
    assert calls == [128, 256, 1]  # training batch, inference batch 256, batch 1


def test_fer_bench_dispatches_to_the_pipeline_bench(capsys: pytest.CaptureFixture) -> None:
    from fer_core.cli import bench as fer_bench

    with pytest.raises(SystemExit) as exit_info:
        fer_bench(["--pipeline", "--help"])
    assert exit_info.value.code == 0 and "fer-bench --pipeline" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        fer_bench(["--help"])
    assert "usage: fer-bench [-h] [--arch" in capsys.readouterr().out


def test_kernels_held_to_avx2_mean_fp32_and_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ATEN_CPU_CAPABILITY=avx2`` makes any CPU run as an AVX2-only one: no bf16, and the bench says so."""
    import torch

    from fer_core.common.device import cpu_flags, cpu_has_native_bf16, resolve_precision

    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert not cpu_has_native_bf16()
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert "held to AVX2" in cpu_flags()
