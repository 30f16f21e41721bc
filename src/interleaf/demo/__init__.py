"""The demo: from a served web site to a trained model, on one machine with no internet.

    1. a web site: synthetic captioned shapes (model/corpus.py, some captions planted on the wrong image)
       plus real pages from a 2008 crawl, served on 127.0.0.1, and crawled into a WARC;
    2. tiny models trained from scratch, since no weights can be downloaded: a CLIP (synthetic captioned
       shapes), the VQ image tokenizer (rendered shapes) and the BPE (the site's captions);
    3. `interleaf run` over the WARC, every stage on the local runner: ingest, dedup, fetch (from the served
       site), CLIP filtering, tokenize;
    4. the reference transformer trained on the run's token shards, images generated from a few prompts,
       the synthetic GenEval benchmark (`interleaf eval`), and the run's HTML report.

Every step writes under OUT and logs its progress; `run_demo` returns where everything is.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import statistics
import time
from dataclasses import dataclass, field, replace
from importlib import resources

from interleaf.demo.site import crawl_to_warc, html_pages, serve

log = logging.getLogger(__name__)

PROBE_STEPS = 7  # steps timed to plan the reference model's training (the first two are not counted)

PROMPTS = ("a photo of a red circle", "a photo of a blue square and a yellow triangle",
           "a photo of three green circles")


@dataclass(kw_only=True)
class DemoConfig:
    examples: int = 3000  # captioned scenes on the site (8 per page)
    mismatched: float = 0.05  # share of site images planted under another scene's caption (CLIP's work)
    clip_pairs: int = 4000  # captioned scenes the tiny CLIP trains on
    clip_steps: int = 600  # CLIP steps (held-out AUC 0.95 at 600 on these compositional captions, 0.81 at 250)
    clip_seconds: float = 150.0  # CLIP training budget
    vq_steps: int = 500  # tiny VQ steps (tokenizers/vq.py: 27 dB held-out PSNR at 600)
    vq_images: int = 6000  # renders the VQ trains on
    text_vocab: int = 384  # BPE vocabulary (256 bytes + merges)
    model_steps: int = 600  # reference transformer steps
    model_seconds: float = 420.0  # training budget, measuring the step time included: fewer steps when slower
    min_model_steps: int = 20  # fewer steps than this make a useless model: a warning says so (the budget holds)
    eval_samples: int = 1  # images per benchmark prompt (GenEval uses 4; bench/model_recipe.py does)
    eval_prompts: int | None = 120  # benchmark prompts (None: the whole suite)
    # torch threads for the CLIP and VQ training: on a shared 2-core machine one thread was 10-20x faster per
    # step than two (measured by the CLIP and model trainers here); raise it on a quiet machine with more cores
    threads: int = 1
    # torch threads for the reference model, None: one per core this process may use (at most 8). Nothing else
    # runs while it trains; on a quiet 2-core machine 2 threads took 1.1 s per step against 1.9 s for 1 (fp32).
    # The budget holds either way: steps are planned from the measured step time.
    model_threads: int | None = None
    model_batch_size: int = 16  # rows of 256 tokens per step
    seed: int = 0
    pipeline_args: list[str] = field(default_factory=list)  # handed to Beam


def _step(n: int, total: int, what: str) -> float:
    log.info("[%d/%d] %s", n, total, what)
    return time.perf_counter()


def build_site(root: str, config: DemoConfig) -> dict:
    """The synthetic shapes site (with planted mismatches) plus the bundled real pages."""
    from interleaf.model.corpus import CorpusConfig, make_examples, write_site

    examples = make_examples(CorpusConfig(examples=config.examples, seed=config.seed))
    rng = random.Random(config.seed + 7)
    planted = sorted(rng.sample(range(len(examples)), round(config.mismatched * len(examples))))
    # a planted example shows the scene of another example of a different caption
    for i in planted:
        j = rng.randrange(len(examples))
        while examples[j].caption == examples[i].caption:
            j = rng.randrange(len(examples))
        examples[i] = replace(examples[i], scene=examples[j].scene)
    write_site(os.path.join(root, "shapes"), examples, per_page=8, title="Shapes")
    real = resources.files("interleaf") / "data" / "site"
    shutil.copytree(str(real), root, dirs_exist_ok=True)
    return {"examples": len(examples), "planted_mismatches": planted}


def train_tokenizers(models: str, site: str, config: DemoConfig) -> dict:
    import torch

    from interleaf.model.corpus import CorpusConfig, make_examples
    from interleaf.shapes import render
    from interleaf.tokenizers.image import image_to_tensor
    from interleaf.tokenizers.text_bpe import TextTokenizer
    from interleaf.tokenizers.vq import VQModel, save_vq, vq_preset
    from interleaf.tokenizers.vq_train import VQTrainConfig, train_vq

    torch.set_num_threads(config.threads)
    out = {}
    clip = _train_clip(os.path.join(models, "clip.pt"), config)
    out["clip"] = {"path": clip.path, "steps": clip.steps, "seconds": round(clip.seconds, 1),
                   "auc_held_out": round(clip.auc, 3), "threshold": round(clip.threshold, 3)}
    log.info("tiny CLIP: %d steps in %.0f s, held-out AUC %.3f, threshold %.3f", clip.steps, clip.seconds,
             clip.auc, clip.threshold)

    # the VQ learns from renders of other scenes than the site's (a tokenizer trained on a sample of the web)
    renders = make_examples(CorpusConfig(examples=config.vq_images, seed=config.seed + 200))
    images = torch.stack([image_to_tensor(render(e.scene), 32) for e in renders])
    vq = VQModel(vq_preset("tiny"))
    result = train_vq(vq, images[:-256], held_out=images[-256:], config=VQTrainConfig(
        steps=config.vq_steps, batch_size=32, seed=config.seed, log_every=100, checkpoint_every=0))
    save_vq(vq, os.path.join(models, "vq.pt"))
    out["vq"] = {"path": os.path.join(models, "vq.pt"), "steps": result.steps, "seconds": round(result.seconds, 1),
                 "held_out": {k: round(v, 3) for k, v in result.held_out.items()}}
    log.info("tiny VQ: %d steps in %.0f s, held-out %s", result.steps, result.seconds, out["vq"]["held_out"])

    captions = []
    for page in html_pages(site):
        with open(os.path.join(site, page), encoding="utf-8", errors="replace") as f:
            captions.append(f.read())
    TextTokenizer.train(captions, vocab_size=config.text_vocab).save(os.path.join(models, "tokenizer.json"))
    out["text"] = {"path": os.path.join(models, "tokenizer.json"), "vocab_size": config.text_vocab}
    return out


def _train_clip(path: str, config: DemoConfig):
    """A tiny CLIP on captioned scenes of the corpus's kinds (not the site's own: a sample drawn with another
    seed), as (document, image store) pairs, the way a CLIP learns from web alt texts."""
    import hashlib
    import io

    from interleaf.filters.clip import ClipTextConfig
    from interleaf.model.clip_train import ClipTrainConfig, train_on_documents
    from interleaf.model.corpus import CorpusConfig, make_examples
    from interleaf.schemas.document import Document, Node
    from interleaf.schemas.image import ImageRecord
    from interleaf.shapes import render

    documents, images = [], {}
    for i, e in enumerate(make_examples(CorpusConfig(examples=config.clip_pairs, seed=config.seed + 100))):
        buf = io.BytesIO()
        render(e.scene, 32).save(buf, "PNG")
        sha = hashlib.sha256(buf.getvalue()).hexdigest()
        images[sha] = ImageRecord(sha256=sha, urls=[f"http://clip-train.example/{i}.png"], width=32, height=32,
                                  format="png", data=buf.getvalue())
        node = Node.image_node(f"http://clip-train.example/{i}.png", alt_text=e.caption)
        node.image_sha256 = sha
        documents.append(Document(doc_id=f"clip-{i}", url=f"http://clip-train.example/{i}", nodes=[node]))
    return train_on_documents(path, documents, images, text=ClipTextConfig(window_before=0, window_after=0),
                              config=ClipTrainConfig(seed=config.seed + 100, steps=config.clip_steps,
                                                     max_seconds=config.clip_seconds, num_threads=config.threads))


def write_config(path: str, models: dict) -> None:
    """The run's settings as a TOML file: what a user would write for this corpus."""
    text = f"""# interleaf run settings for the demo corpus (flat synthetic shapes and a few real pages)
stages = ["ingest", "dedup", "fetch", "clip", "tokenize"]
num_shards = 2

[ingest.extract]
icon_max_side = 16      # the shapes are 32 px content images, not icons (the default treats <= 32 px as icons)

[ingest.quality]
min_images = 1          # OBELICS kept documents with 1..30 images
max_images = 30

[dedup.images]
# pHash compares grayscale structure: two flat shapes of different colours at the same place hash alike, so
# near-duplicate merging would swap images between captions. Exact (sha256) duplicates are still merged.
max_hamming = 0

[fetch]
# The site is our own server on 127.0.0.1: no politeness limit needed (the default, 5 requests/s and 2
# connections per host, is for other people's servers; at 5/s this site's 3,000 images would take 10 minutes)
per_host_rate = 0
per_host_concurrency = 8

[fetch.fetch]
allow_private_hosts = true   # the demo's site is on 127.0.0.1
image_size = 32
respect_robots_txt = true

[image_rules]
min_side = 32                # the shapes are 32 px (OBELICS's 150 px floor is for photos)

[clip.text]
window_after = 0        # the site's captions come before their image; the one after belongs to the next

[clip.model]
model_name = "interleaf-tiny-clip"
pretrained = "{models['clip']['path']}"

[tokenize]
text_tokenizer = "{models['text']['path']}"
image_tokenizer = "{models['vq']['path']}"
num_shards = 2
"""
    with open(path, "w") as f:
        f.write(text)


def run_demo(out: str, config: DemoConfig | None = None) -> dict:
    """Run everything under `out`; returns a summary (also written to out/demo.json)."""
    from interleaf import config as configfile
    from interleaf.pipelines.run import RunConfig, run
    from interleaf.pipelines.tokenize import TokenizeConfig

    config = config or DemoConfig()
    total = 7
    os.makedirs(out, exist_ok=True)
    site, models, run_dir = (os.path.join(out, d) for d in ("site", "models", "run"))
    summary: dict = {"out": out, "timings_s": {}}
    started = time.perf_counter()

    t = _step(1, total, f"web site: {config.examples} captioned shape images + real 2008 pages -> {site}")
    shutil.rmtree(site, ignore_errors=True)
    summary["site"] = build_site(site, config)
    summary["timings_s"]["site"] = round(time.perf_counter() - t, 1)

    t = _step(2, total, "tiny CLIP, VQ and BPE, trained from scratch (no downloads)")
    os.makedirs(models, exist_ok=True)
    summary["models"] = train_tokenizers(models, site, config)
    summary["timings_s"]["tokenizers"] = round(time.perf_counter() - t, 1)

    with serve(site) as base:
        t = _step(3, total, f"crawl the site at {base} into a WARC")
        pages = [f"{base}/{p}" for p in html_pages(site)]
        warc = os.path.join(out, "crawl.warc.gz")
        crawl_to_warc(pages, warc)
        summary["crawl"] = {"warc": warc, "pages": len(pages)}

        t = _step(4, total, "interleaf run: ingest, dedup, fetch, clip, tokenize (Apache Beam, local runner)")
        toml = os.path.join(out, "demo.toml")
        write_config(toml, summary["models"])
        values = configfile.load_toml(toml)
        cfg = RunConfig()
        cfg.tokenize = configfile.build(TokenizeConfig, values.pop("tokenize"), "tokenize")
        cfg = configfile.apply(cfg, values)
        manifest = run([warc], run_dir, cfg, config.pipeline_args)
        summary["timings_s"]["pipeline"] = round(time.perf_counter() - t, 1)
    summary["pipeline"] = {"funnel": manifest["funnel"], "unreconciled": manifest["unreconciled"]}
    summary["planted_mismatches"] = _planted_outcome(run_dir, summary["site"]["planted_mismatches"])

    t = _step(5, total, f"reference transformer on {run_dir}/tokens (about {config.model_seconds:.0f} s)")
    summary["model"] = _train_model(run_dir, os.path.join(out, "model"), summary["models"], config)
    summary["timings_s"]["model"] = round(time.perf_counter() - t, 1)

    t = _step(6, total, "generate from prompts, then the synthetic GenEval benchmark")
    summary["generated"], summary["eval"] = _generate_and_eval(os.path.join(out, "model"), out, config)
    summary["timings_s"]["generate_eval"] = round(time.perf_counter() - t, 1)

    t = _step(7, total, "the run's HTML report")
    from interleaf.report import write_report
    summary["report"] = write_report(run_dir)
    summary["timings_s"]["total"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(out, "demo.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def _site_index(url: str | None) -> int | None:
    """The example index of a shapes-site image URL (.../images/000123.png), else None."""
    name = os.path.basename(url or "")
    return int(name[:6]) if "/shapes/images/" in (url or "") and name[:6].isdigit() else None


def _planted_outcome(run_dir: str, planted: list[int]) -> dict:
    """Of the site images that reached the CLIP stage (stored ok), how many planted caption mismatches it
    dropped and how many true pairs it kept (kept = still an image node of a curated document)."""
    from interleaf.schemas.document import documents_from_table
    from interleaf.schemas.image import images_from_table
    from interleaf.shards import open_shards
    from interleaf.storage import join

    reached, kept = set(), set()
    for _, table in open_shards(join(run_dir, "images")).tables(columns=None):
        for r in images_from_table(table):
            if r.status == "ok":
                reached |= {i for i in map(_site_index, r.urls) if i is not None}
    for _, table in open_shards(join(run_dir, "documents")).tables():
        for doc in documents_from_table(table):
            kept |= {i for i in (_site_index(n.image_url) for n in doc.image_nodes if n.kept) if i is not None}
    planted_set = set(planted)
    outcome = {"planted": {"kept": 0, "dropped": 0}, "true": {"kept": 0, "dropped": 0}}
    for i in reached:
        outcome["planted" if i in planted_set else "true"]["kept" if i in kept else "dropped"] += 1
    return outcome


def _train_model(run_dir: str, model_dir: str, models: dict, config: DemoConfig) -> dict:
    import torch

    from interleaf.model.train import TrainConfig, latest_checkpoint, read_loss_log, train

    torch.set_num_threads(config.model_threads or min(8, _usable_cores()))
    shutil.rmtree(model_dir, ignore_errors=True)
    started = time.perf_counter()
    # precision "auto": bf16 autocast only where the CPU has it natively (AMX / AVX512-BF16); emulated bf16
    # made a step about 25x slower on AVX2 CPUs (issue 14)
    tc = TrainConfig(preset="tiny", steps=config.model_steps, seq_len=256, batch_size=config.model_batch_size,
                     lr=3e-3, seed=config.seed, log_every=25, checkpoint_every=100, precision="auto")
    tokens = os.path.join(run_dir, "tokens")
    plan = plan_steps(tc, tokens, config)
    # the learning-rate schedule spans the steps that fit, so a short run still ends its decay
    train(replace(tc, steps=plan["steps"]), tokens, model_dir,
          tokenizer_files={"text": models["text"]["path"], "image": models["vq"]["path"]})
    losses = read_loss_log(model_dir)
    seconds = time.perf_counter() - started
    trained = losses[-1]["elapsed_s"]
    with open(os.path.join(latest_checkpoint(model_dir), "meta.json")) as f:
        chosen = json.load(f)["precision"]  # what the trainer chose, and why
    speed = {"seconds_per_step": round(trained / len(losses), 3),
             "tokens_per_s": round(len(losses) * tc.batch_size * tc.seq_len / trained),
             "precision": chosen["dtype"], "precision_reason": chosen["reason"]}
    over = seconds - config.model_seconds
    log.info("reference model: %d steps in %.0f s (%.2f s per step, %d tokens/s, %s; budget %.0f s%s)",
             len(losses), seconds, speed["seconds_per_step"], speed["tokens_per_s"], chosen["dtype"],
             config.model_seconds, f", {over:.0f} s over" if over > 0 else "")
    return {"dir": model_dir, "steps": len(losses), "first": losses[0], "last": losses[-1],
            "seconds": round(seconds, 1), "budget_s": config.model_seconds, "over_budget_s": round(max(0.0, over), 1),
            **speed, "plan": plan}


def _usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one; a container's share)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def plan_steps(tc, tokens: str, config: DemoConfig) -> dict:
    """How many steps fit config.model_seconds on this machine, from a few measured steps (whose time counts
    against the budget). Never more than tc.steps; fewer than config.min_model_steps only when even those
    would not fit, and then a warning says so: the budget holds rather than the step count."""
    import tempfile

    from interleaf.model.train import read_loss_log, train

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as probe:
        train(replace(tc, checkpoint_every=10_000), tokens, probe, stop_after=PROBE_STEPS)
        records = read_loss_log(probe)
    # the first steps pay for lazy initialisation and allocation: the median of the later steps' times (a
    # mean of 3 steps overestimated the demo's step time by 24%: 1.49 s against 1.20 s measured in training)
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(records[1:], records[2:])]
    per_step = statistics.median(times) if times else records[-1]["elapsed_s"]
    probe_s = time.perf_counter() - started
    left = config.model_seconds - probe_s
    fit = max(1, int(left / per_step * 0.97) - 1)  # the start-up of the real run, and 3% for noise
    steps = min(tc.steps, fit)
    if fit < config.min_model_steps:
        log.warning("this machine takes %.2f s per step: only %d steps fit the %.0f s training budget "
                    "(%d would be a useful minimum); the model will be weak. Give more time with "
                    "--model-seconds", per_step, steps, config.model_seconds, config.min_model_steps)
    log.info("about %.2f s per step here (%d tokens/s): %d of %d steps fit the %.0f s budget (%.0f s spent "
             "measuring)", per_step, tc.batch_size * tc.seq_len / per_step, steps, tc.steps, config.model_seconds,
             probe_s)
    return {"steps": steps, "seconds_per_step": round(per_step, 3), "probe_s": round(probe_s, 1)}


def _generate_and_eval(model_dir: str, out: str, config: DemoConfig) -> tuple[list[dict], dict]:
    from interleaf.model.generate import GenerationConfig, Generator
    from interleaf.model.geneval import make_suite, run_eval

    generator = Generator.from_checkpoint(model_dir)
    gen_dir = os.path.join(out, "generated")
    os.makedirs(gen_dir, exist_ok=True)
    gcfg = GenerationConfig(cfg_scale=3.0, temperature=1.0, seed=config.seed, max_images=1)
    generated = []
    for i, prompt in enumerate(PROMPTS):
        # captions on the site read "Figure N: <caption>." before each image
        context = generator.prompt(f"Figure {i}: {prompt}.", open_image=True)
        tokens = context + generator.generate(context, gcfg)  # generate() returns what follows the context
        generated.append({"prompt": prompt, "images": _save(generator, tokens, gen_dir, i)})
    suite = make_suite()
    if config.eval_prompts is not None:
        suite = random.Random(config.seed).sample(suite, min(config.eval_prompts, len(suite)))
    suite = [{**m, "prompt": f"Figure 0: {m['prompt']}."} for m in suite]
    scores = run_eval(generator, os.path.join(out, "eval"), suite=suite, samples=config.eval_samples,
                      config=GenerationConfig(cfg_scale=3.0, temperature=1.0, seed=config.seed))
    return generated, {k: scores.get(k) for k in ("overall", "seen", "held_out", "tasks",
                                                  "ceiling_vq_reconstructions", "seconds_per_image")}


def _save(generator, tokens: list[int], directory: str, index: int) -> list[str]:
    """The generated images as PNGs (shown 4x, pixels kept sharp)."""
    paths = []
    images = [value for kind, value in generator.decode(tokens) if kind == "image"]
    for j, img in enumerate(images):
        path = os.path.join(directory, f"prompt-{index}-{j}.png")
        img.resize((128, 128), resample=0).save(path)
        paths.append(path)
    return paths
