"""interleaf.precision: bf16 autocast only where the hardware does bf16 natively (issue 14)."""

import logging

import pytest
import torch

from interleaf import precision
from interleaf.precision import CpuFeatures, cpu_features, decide, native_bf16

AVX2_EPYC = CpuFeatures(capability="AVX2")  # AMD EPYC before Zen 4: emulated bf16, ~25x slower
SKYLAKE_AVX512 = CpuFeatures(capability="AVX512")  # AVX-512 without its BF16 instructions
ZEN4 = CpuFeatures(capability="AVX512", avx512_bf16=True)
SAPPHIRE_RAPIDS = CpuFeatures(capability="AVX512", avx512_bf16=True, amx=True)
GRAVITON3 = CpuFeatures(capability="SVE256", arm_bf16=True)
OLD_ARM = CpuFeatures(capability="DEFAULT")


@pytest.mark.parametrize("features, native", [
    (AVX2_EPYC, False), (SKYLAKE_AVX512, False), (OLD_ARM, False),
    (ZEN4, True), (SAPPHIRE_RAPIDS, True), (GRAVITON3, True),
])
def test_auto_takes_bf16_only_where_the_cpu_has_it_natively(features, native):
    chosen = decide("auto", "cpu", features=features)
    assert chosen.bf16 is native and native_bf16(features)[0] is native
    if not native:
        assert "emulated" in chosen.reason and features.capability in chosen.reason


def test_forced_settings_win_over_the_hardware():
    assert decide("bf16", "cpu", features=AVX2_EPYC).bf16
    assert not decide("fp32", "cpu", features=SAPPHIRE_RAPIDS).bf16
    assert not decide("fp32", "cuda", cuda_bf16=True).bf16


def test_gpus_take_bf16_from_ampere_on():
    assert decide("auto", "cuda", cuda_bf16=True).bf16
    assert not decide("auto", "cuda:1", cuda_bf16=False).bf16


def test_unknown_setting_is_a_clear_error():
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32, found 'fp16'"):
        decide("fp16", "cpu", features=AVX2_EPYC)


def test_this_machine_reports_what_torch_reports():
    features = cpu_features()
    assert features.capability == torch.backends.cpu.get_cpu_capability()
    assert features.amx == torch.cpu._is_amx_tile_supported()
    assert features.avx512_bf16 == torch.cpu._is_avx512_bf16_supported()


def test_choose_logs_its_decision_once_per_purpose(caplog):
    with caplog.at_level(logging.INFO, logger="interleaf.precision"):
        first = precision.choose("auto", torch.device("cpu"), purpose="test-purpose-once")
        precision.choose("auto", "cpu", purpose="test-purpose-once")
    lines = [r.getMessage() for r in caplog.records if "test-purpose-once" in r.getMessage()]
    assert len(lines) == 1 and first.reason in lines[0]


def test_autocast_runs_bf16_matmuls_only_when_chosen():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with precision.autocast(decide("bf16", "cpu"), "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    with precision.autocast(decide("fp32", "cpu"), "cpu"):
        assert (x @ w).dtype == torch.float32


def test_batch_padding_makes_every_batch_a_multiple_of_the_row_multiple():
    assert [precision.batch_padding(n) for n in (0, 1, 15, 16, 17, 32)] == [0, 15, 1, 0, 15, 0]
    assert all((n + precision.batch_padding(n)) % precision.ROW_MULTIPLE == 0 for n in range(1, 100))
