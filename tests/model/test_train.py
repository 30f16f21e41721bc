import json
import logging
import os
import random
from pathlib import Path

import pytest
import torch

from interleaf.model.presets import PRESETS
from interleaf.model.train import (
    TrainConfig,
    latest_checkpoint,
    load_checkpoint,
    lr_factor,
    read_loss_log,
    train,
)
from interleaf.model.transformer import Transformer, count_params, model_preset

SMALL = {"dim": 32, "n_layers": 2, "n_heads": 2}


def _config(**kw):
    base = {"preset": "debug", "model_overrides": SMALL, "seq_len": 64, "batch_size": 4, "steps": 6, "lr": 3e-3,
            "warmup_steps": 2, "caption_dropout": 0.2, "pack_window": 32, "log_every": 1,
            "checkpoint_every": 100, "z_loss": 1e-4}
    return TrainConfig(**{**base, **kw})


@pytest.fixture
def shards(tmp_path, corpus):
    rng = random.Random(0)
    return corpus.write(tmp_path / "tok", [corpus.captioned(rng) for _ in range(120)], shards=2)


def test_loss_falls_on_a_small_corpus(tmp_path, shards):
    records = train(_config(steps=40, lr=1e-2, warmup_steps=5, batch_size=8), shards, str(tmp_path / "run"))
    first, last = records[0], records[-1]
    # image codes follow from the caption's first token: both modalities must be learned well below chance
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["image_loss"] < 0.5 * first["image_loss"] and last["text_loss"] < first["text_loss"]
    assert first["text_tokens"] > 0 and first["image_tokens"] > 0
    assert read_loss_log(str(tmp_path / "run"))[-1]["step"] == 40


def test_resume_is_exact(tmp_path, shards):
    straight = train(_config(), shards, str(tmp_path / "a"))
    half = train(_config(), shards, str(tmp_path / "b"), stop_after=3)
    assert [r["step"] for r in half] == [1, 2, 3]
    rest = train(_config(), shards, str(tmp_path / "b"))  # finds checkpoints/LATEST and resumes
    assert [r["step"] for r in rest] == [4, 5, 6]
    assert [r["loss"] for r in straight] == [r["loss"] for r in half + rest]
    assert [r["lr"] for r in straight] == [r["lr"] for r in half + rest]
    assert [r["loss"] for r in read_loss_log(str(tmp_path / "b"))] == [r["loss"] for r in straight]
    a, _ = load_checkpoint(str(tmp_path / "a"))
    b, meta = load_checkpoint(str(tmp_path / "b"))
    assert meta["step"] == 6
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_checkpoint_holds_everything_to_resume(tmp_path, shards):
    out = str(tmp_path / "run")
    train(_config(steps=2), shards, out)
    path = latest_checkpoint(out)
    assert os.path.basename(path) == "step-000002"
    state = torch.load(os.path.join(path, "state.pt"), weights_only=False)
    assert {"step", "optimizer", "scheduler", "rng", "data"} <= set(state)
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    assert state["data"]["cursor"]["row"] > 0 or state["data"]["cursor"]["window"] > 0
    meta = json.loads(Path(os.path.join(path, "meta.json")).read_text())
    assert meta["vocabulary"]["image_grid"] == [4, 4] and meta["model"]["dim"] == 32


def test_resume_refuses_other_shards(tmp_path, shards, corpus):
    out = str(tmp_path / "run")
    train(_config(steps=1), shards, out)
    from interleaf.model.data import write_token_shards
    from interleaf.schemas.tokens import TokenShardInfo
    other = TokenShardInfo(vocabulary=corpus.vocab, tokenizers={"text": "x" * 64})
    write_token_shards(str(tmp_path / "other"), [("a", corpus.captioned(random.Random(1)))], other)
    with pytest.raises(ValueError, match="another vocabulary or tokenizers"):
        train(_config(steps=2), str(tmp_path / "other"), out)


def test_schedule_warms_up_then_decays():
    c = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, c) == pytest.approx(0.1) and lr_factor(9, c) == pytest.approx(1.0)
    assert lr_factor(10, c) == pytest.approx(1.0) and lr_factor(100, c) == pytest.approx(0.1)
    assert lr_factor(55, c) == pytest.approx(0.55)


def test_presets_span_a_few_million_to_about_100m_parameters():
    counts = {name: count_params(model_preset(name, vocab_size=16_384)) for name in PRESETS}
    assert 1e6 < counts["tiny"] < 15e6
    assert 80e6 < counts["base"] < 130e6
    assert counts["debug"] < counts["tiny"] < counts["small"] < counts["base"]


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    model = Transformer(model_preset("debug", vocab_size=50, **SMALL)).eval()
    x = torch.randint(0, 50, (2, 24))
    with torch.no_grad():
        full = model(x)
        cache = model.new_cache(2, 32)
        parts = [model(x[:, :10], cache=cache)] + [model(x[:, t:t + 1], cache=cache) for t in range(10, 24)]
    assert torch.allclose(full, torch.cat(parts, 1), atol=1e-5)


def test_document_mask_isolates_packed_documents():
    """Logits of a document are the same alone or packed after another document."""
    torch.manual_seed(0)
    model = Transformer(model_preset("debug", vocab_size=50, **SMALL)).eval()
    a, b = torch.randint(0, 50, (1, 7)), torch.randint(0, 50, (1, 9))
    packed = torch.cat([a, b], 1)
    doc = torch.tensor([[0] * 7 + [1] * 9])
    pos = torch.tensor([list(range(7)) + list(range(9))])
    with torch.no_grad():
        together = model(packed, positions=pos, doc_ids=doc)
        alone = model(b)
    assert torch.allclose(together[:, 7:], alone, atol=1e-5)


def test_forced_bf16_autocast_trains(tmp_path, shards):
    records = train(_config(steps=3, precision="bf16"), shards, str(tmp_path / "run"))
    assert all(r["loss"] == r["loss"] and r["loss"] < 10 for r in records)  # finite
    model, meta = load_checkpoint(str(tmp_path / "run"))
    assert meta["train"]["precision"] == "bf16" and meta["precision"]["dtype"] == "bf16"
    assert next(model.parameters()).dtype == torch.float32  # fp32 master weights


def test_auto_precision_is_what_this_cpu_does_natively_and_is_recorded(tmp_path, shards):
    from interleaf.precision import cpu_features, native_bf16

    train(_config(steps=2), shards, str(tmp_path / "run"))
    _, meta = load_checkpoint(str(tmp_path / "run"))
    native, why = native_bf16(cpu_features())
    assert meta["train"]["precision"] == "auto"
    assert meta["precision"] == {"dtype": "bf16" if native else "fp32", "reason": why}


def test_one_document_rows_take_the_causal_kernel_with_the_same_logits():
    """Rows of one document each (padding after it) skip the document mask; logits are the masked path's."""
    torch.manual_seed(0)
    model = Transformer(model_preset("debug", vocab_size=50, **SMALL)).eval()
    x = torch.randint(0, 50, (2, 12))
    doc = torch.tensor([[0] * 12, [0] * 9 + [-1] * 3])
    with torch.no_grad():
        fast = model(x, doc_ids=doc)
        masked = model(x, doc_ids=doc + (doc >= 0) * 5)  # the same rows as document 5: the masked path
    assert torch.allclose(fast[0], masked[0], atol=1e-5) and torch.allclose(fast[1, :9], masked[1, :9], atol=1e-5)


def test_grid_positions_change_what_the_model_predicts():
    torch.manual_seed(0)
    model = Transformer(model_preset("debug", vocab_size=50, **SMALL)).eval()
    assert model.config.grid_positions == 64  # presets give image codes row and column embeddings
    x = torch.randint(0, 50, (1, 6))
    none = torch.full((1, 6, 2), -1)
    cells = none.clone()
    cells[0, 3] = torch.tensor([2, 5])
    with torch.no_grad():
        a, b, c = model(x), model(x, cells=none), model(x, cells=cells)
    assert torch.equal(a, b)  # (-1, -1) adds nothing
    assert torch.equal(a[0, :3], c[0, :3]) and not torch.allclose(a[0, 3], c[0, 3])


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, shards):
    eager = train(_config(steps=3), shards, str(tmp_path / "eager"))
    compiled = train(_config(steps=3, compile=True), shards, str(tmp_path / "compiled"))
    for a, b in zip(eager, compiled):
        assert abs(a["loss"] - b["loss"]) < 1e-3, (a, b)


def test_demo_step_plan_keeps_the_budget_and_says_when_too_few_steps_fit(shards, caplog):
    """issue 14: on a slow CPU the demo trains fewer steps, never longer than its budget without a warning."""
    from interleaf.demo import DemoConfig, plan_steps

    config = _config(steps=500)
    roomy = plan_steps(config, shards, DemoConfig(model_seconds=3600))
    assert roomy["steps"] == 500 and roomy["seconds_per_step"] > 0  # never more than asked for
    with caplog.at_level(logging.WARNING, logger="interleaf.demo"):
        tight = plan_steps(config, shards, DemoConfig(model_seconds=0.001, min_model_steps=20))
    assert tight["steps"] == 1  # measuring alone spent the budget: one step, not 20
    assert any("the model will be weak" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("features, dtype", [
    ({"capability": "AVX2"}, "fp32"),  # AMD EPYC before Zen 4, most laptops: bf16 would be emulated
    ({"capability": "AVX512"}, "fp32"),  # AVX-512 without its BF16 instructions (Skylake, Ice Lake)
    ({"capability": "AVX512", "avx512_bf16": True, "amx": True}, "bf16"),  # Sapphire Rapids
])
def test_a_training_step_takes_bf16_only_on_a_cpu_that_has_it(tmp_path, shards, monkeypatch, features, dtype):
    """issue 14: the trainer asks the CPU what it does natively (the probe is swapped for each CPU kind)."""
    from interleaf import precision
    from interleaf.precision import CpuFeatures

    monkeypatch.setattr(precision, "cpu_features", lambda: CpuFeatures(**features))
    train(_config(steps=1), shards, str(tmp_path / "run"))
    _, meta = load_checkpoint(str(tmp_path / "run"))
    assert meta["precision"]["dtype"] == dtype
