"""Precision benchmark (issue 14): fp32 against bf16 autocast on this CPU, for the work interleaf does, and what
`--precision auto` picks here. Writes the "precision" section of bench/RESULTS.md.

    .venv/bin/python bench/precision_bench.py [--threads 1] [--repeats 3]

Workloads: one 1024x256 @ 256x1024 matmul forward and backward; one training step of the tiny reference
transformer at the demo's shape (batch 16 x 256 tokens, AdamW); one training step of the tiny VQ (batch 32,
32x32 images). Each is timed as the median of `repeats` runs after a warm-up. The ratio bf16 / fp32 is what
emulated bf16 costs (above 1) or native bf16 saves (below 1); "auto / best" is how far auto's pick is from
the faster of the two on this machine (1.00: it picked the faster one).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from results import table, write_section  # bench/ is sys.path[0] when run as a script

from interleaf import precision
from interleaf.model.transformer import Transformer, model_preset
from interleaf.tokenizers.vq import VQConfig, VQModel

log = logging.getLogger("precision_bench")
VOCAB = 7 + 256 + 384  # the demo's vocabulary: specials, image codes, text BPE


def matmul_step():
    a = torch.randn(1024, 256, requires_grad=True)
    b = torch.randn(256, 1024, requires_grad=True)

    def run(chosen):
        with precision.autocast(chosen, "cpu"):
            out = a @ b
        out.float().sum().backward()
    return run


def transformer_step(batch: int = 16, seq: int = 256):
    torch.manual_seed(0)
    model = Transformer(model_preset("tiny", vocab_size=VOCAB))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, VOCAB, (batch, seq + 1))

    def run(chosen):
        with precision.autocast(chosen, "cpu"):
            logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def vq_step(batch: int = 32):
    torch.manual_seed(0)
    model = VQModel(VQConfig())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.rand(batch, 3, 32, 32) * 2 - 1

    def run(chosen):
        with precision.autocast(chosen, "cpu"):
            rec, losses, _ = model(images)
        loss = F.mse_loss(rec.float(), images) + sum(v.float() for v in losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return run


def seconds(run, chosen, repeats: int) -> float:
    run(chosen)  # warm-up: allocations, oneDNN primitive caches
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run(chosen)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the demo trains with 1)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    features = precision.cpu_features()
    auto = precision.decide("auto", "cpu", features=features)
    fp32, bf16 = precision.decide("fp32", "cpu"), precision.decide("bf16", "cpu")
    rows = []
    for name, make in [("matmul 1024x256 @ 256x1024, fwd+bwd", matmul_step),
                       ("tiny transformer train step, 16 x 256 tokens", transformer_step),
                       ("tiny VQ train step, 32 images 32x32", vq_step)]:
        run = make()
        t32, t16 = seconds(run, fp32, args.repeats), seconds(run, bf16, args.repeats)
        picked = t16 if auto.bf16 else t32
        rows.append([name, f"{t32 * 1000:.1f}", f"{t16 * 1000:.1f}", t16 / t32, auto.dtype, picked / min(t32, t16)])
        log.info("%s: fp32 %.1f ms, bf16 %.1f ms (bf16/fp32 %.2f), auto picks %s", name, t32 * 1000, t16 * 1000,
                 t16 / t32, auto.dtype)
    headers = ["workload", "fp32 ms", "bf16 autocast ms", "bf16 / fp32", "auto picks", "auto / best"]
    body = (f"CPU: torch capability {features.capability}, AMX {features.amx}, AVX512-BF16 "
            f"{features.avx512_bf16}, Arm BF16 {features.arm_bf16}; {args.threads} torch thread(s), median of "
            f"{args.repeats}. auto: {auto.dtype} ({auto.reason}).\n\n" + table(headers, rows))
    print(body)
    # one section per kind of CPU, so that a run on one kind leaves the other kind's figures in place
    native = precision.native_bf16(features)[0]
    write_section("precision_native" if native else "precision",
                  f"Precision on a CPU {'with' if native else 'without'} native bf16: fp32 against bf16 "
                  "autocast (bench/precision_bench.py)", body)


if __name__ == "__main__":
    main()
