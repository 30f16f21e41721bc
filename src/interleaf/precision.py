"""Which floating-point precision a model runs in, chosen by what the hardware does natively.

bf16 autocast pays off only where the hardware has bf16 arithmetic: CUDA GPUs from Ampere on, and CPUs
with AMX tiles or AVX512-BF16 (Intel Sapphire Rapids and later, AMD Zen 4 and later), or Arm's BF16
extension. Elsewhere PyTorch emulates it: on an AMD EPYC whose torch capability is AVX2, one
1024x256 @ 256x1024 matmul forward and backward took 541 ms in bf16 against 22 ms in fp32 (25x; issue 14),
and bench/precision_bench.py measured the project's own steps 12-16x slower in bf16 there (bench/RESULTS.md). So every place that trains or runs a model asks `choose()` with its setting
("auto", "bf16" or "fp32") and gets bf16 only where it is native, unless the setting forces one.

`native_bf16()` is a pure function of what the CPU reports, so the rule is tested without the hardware.
`batch_padding()` keeps inference results independent of what shares a batch (see ROW_MULTIPLE).
"""

from __future__ import annotations

import functools
import logging
from contextlib import nullcontext
from dataclasses import dataclass

log = logging.getLogger(__name__)

SETTINGS = ("auto", "bf16", "fp32")


@dataclass(frozen=True, kw_only=True)
class CpuFeatures:
    """What the CPU reports about bf16 support (torch's cpuinfo, or /proc/cpuinfo on Arm)."""

    capability: str  # torch.backends.cpu.get_cpu_capability(): "AVX2", "AVX512", "SVE256", "DEFAULT", ...
    avx512_bf16: bool = False  # x86 AVX512-BF16 instructions
    amx: bool = False  # x86 AMX tiles (AMX-BF16 comes with them on every CPU that has them)
    arm_bf16: bool = False  # Arm BF16 extension ("bf16" in /proc/cpuinfo Features)


@dataclass(frozen=True)
class Precision:
    """The outcome of `choose()`: bf16 autocast or fp32, and a sentence saying why."""

    dtype: str  # "bf16" or "fp32"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.dtype == "bf16"


def native_bf16(features: CpuFeatures) -> tuple[bool, str]:
    """(whether bf16 matmuls run natively on this CPU, why). An AVX512 capability alone is not enough:
    Skylake and Ice Lake have AVX-512 without its BF16 instructions."""
    if features.amx:
        return True, "the CPU has AMX tiles (native bf16)"
    if features.avx512_bf16:
        return True, "the CPU has AVX512-BF16 (native bf16)"
    if features.arm_bf16:
        return True, "the CPU has the Arm BF16 extension (native bf16)"
    return False, (f"the CPU (torch capability {features.capability}) has no AMX or AVX512-BF16, so bf16 "
                   "would be emulated, about 25x slower than fp32")


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's CpuFeatures, read through torch (x86) or /proc/cpuinfo (Arm); once per process."""
    import torch

    cpu = torch.cpu

    def flag(name: str) -> bool:
        probe = getattr(cpu, name, None)  # private helpers of torch.cpu (torch >= 2.3); absent: no claim
        try:
            return bool(probe()) if probe is not None else False
        except RuntimeError:
            return False

    arm_bf16 = False
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("features"):
                    arm_bf16 = "bf16" in line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    return CpuFeatures(capability=torch.backends.cpu.get_cpu_capability(),
                       avx512_bf16=flag("_is_avx512_bf16_supported"), amx=flag("_is_amx_tile_supported"),
                       arm_bf16=arm_bf16)


def decide(setting: str, device: str, *, features: CpuFeatures | None = None,
           cuda_bf16: bool | None = None) -> Precision:
    """The precision for `setting` on `device` ("cpu", "cuda", "cuda:N"); pure given features / cuda_bf16."""
    if setting not in SETTINGS:
        raise ValueError(f"precision must be one of {', '.join(SETTINGS)}, found {setting!r}")
    if setting == "fp32":
        return Precision("fp32", "fp32 asked for")
    if setting == "bf16":
        return Precision("bf16", "bf16 asked for")
    if device.startswith("cuda"):
        if cuda_bf16:
            return Precision("bf16", "the GPU has native bf16")
        return Precision("fp32", "the GPU has no native bf16 (before Ampere)")
    native, why = native_bf16(features) if features is not None else (False, "CPU features unknown")
    return Precision("bf16" if native else "fp32", why)


_logged: set[tuple[str, str, Precision]] = set()


def choose(setting: str, device, *, purpose: str, quiet: bool = False) -> Precision:
    """`decide()` for this machine, with one log line per purpose saying which precision and why (none when
    `quiet`, as on ranks other than 0). `device`: a torch.device or its name."""
    device = str(device)
    cuda_bf16 = None
    if device.startswith("cuda") and setting == "auto":
        import torch

        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    features = cpu_features() if device == "cpu" and setting == "auto" else None
    chosen = decide(setting, device, features=features, cuda_bf16=cuda_bf16)
    key = (purpose, device, chosen)
    if key not in _logged and not quiet:
        _logged.add(key)
        log.info("%s on %s: %s (%s)", purpose, device,
                 "bf16 autocast" if chosen.bf16 else "fp32", chosen.reason)
    return chosen


def autocast(chosen: Precision, device):
    """A context manager that runs the enclosed forward pass as `chosen` says."""
    device = str(device)
    if not chosen.bf16:
        return nullcontext()
    import torch

    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------- batch-invariant inference

# Every inference forward pass (CLIP embeddings, VQ codes) gets a multiple of this many rows, the last row
# repeated, so that a result does not depend on how many others share its batch: the CPU's matmul and
# convolution kernels handle a batch's last rows by another path. Unpadded, ViT-B-32's fp32 image embeddings
# differed in the 7th digit between batches of 7 and 8 on an AMD EPYC (AVX-512), and the tiny VQ encoder's
# outputs between batches of 1, 3 and 8, so shards differed with the worker count. Unpadded batches of 8, 32
# and 40 agreed bit for bit there; 16 rather than 8 in case another CPU's kernels step by a whole AVX-512
# vector of 16 floats (not measured on one). At most 15 rows of padding.
ROW_MULTIPLE = 16


def batch_padding(rows: int) -> int:
    """Rows to append to a batch of `rows` so that its size is a multiple of ROW_MULTIPLE (0 for none)."""
    return -rows % ROW_MULTIPLE if rows else 0

