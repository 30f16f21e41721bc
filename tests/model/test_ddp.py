"""Data parallelism without a cluster: two CPU processes over gloo on 127.0.0.1, launched like torchrun launches
them (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment), against one process on the same global batch."""

import json
import os
import random
import socket
import subprocess
import sys

import torch

from interleaf.model.train import TrainConfig, load_checkpoint, read_loss_log, train

WORKER = """
import json, sys, torch
torch.set_num_threads(1)
from interleaf.model.train import TrainConfig, train
import torch.distributed as dist
config, shards, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
train(TrainConfig(**config), shards, out)
dist.destroy_process_group()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_step_matches_one_process(tmp_path, corpus):
    rng = random.Random(0)
    shards = corpus.write(tmp_path / "tok", [corpus.captioned(rng) for _ in range(40)])
    config = {"preset": "debug", "model_overrides": {"dim": 32, "n_layers": 2, "n_heads": 2}, "seq_len": 64,
              "batch_size": 4, "steps": 2, "warmup_steps": 1, "caption_dropout": 0.2, "pack_window": 16,
              "log_every": 1, "z_loss": 1e-4,
              # fp32 on every CPU: the test is about data parallelism, and under bf16 autocast (picked where
              # the CPU has native bf16) two processes round their partial sums differently (grad norms
              # 1.4e-4 apart on an AMD EPYC with AVX512-BF16, against a tolerance of 1e-5)
              "precision": "fp32"}
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(config), shards,
                                       str(tmp_path / "ddp")], env=env, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]

    single = train(TrainConfig(**config), shards, str(tmp_path / "one"))
    ddp = read_loss_log(str(tmp_path / "ddp"))
    assert [r["step"] for r in ddp] == [1, 2]
    for a, b in zip(single, ddp):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert a["text_tokens"] == b["text_tokens"] and a["image_tokens"] == b["image_tokens"]
        assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-5 * max(1.0, a["grad_norm"])
    one, _ = load_checkpoint(str(tmp_path / "one"))
    two, _ = load_checkpoint(str(tmp_path / "ddp"))
    for (name, p), q in zip(one.state_dict().items(), two.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-5), name
