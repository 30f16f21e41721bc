import io

import numpy as np
import pytest
import torch
from PIL import Image

from interleaf.model.data import next_cells
from interleaf.model.generate import GenerationConfig, Generator, filter_logits
from interleaf.model.transformer import Transformer, model_preset
from interleaf.tokenizers.codec import SequenceCodec
from interleaf.tokenizers.text_bpe import TextTokenizer
from interleaf.tokenizers.vq import VQConfig, VQModel


@pytest.fixture(scope="module")
def text_tokenizer():
    return TextTokenizer.train(["a red circle", "a blue square left of a green triangle"] * 3, vocab_size=260,
                               min_frequency=1)


def _generator(text_tokenizer, corpus_cls, model=None):
    corpus = corpus_cls(grid=(4, 4), codes=16, text=text_tokenizer.vocab_size)
    torch.manual_seed(0)
    model = model or Transformer(model_preset("debug", vocab_size=corpus.vocab.size, dim=32, n_layers=2, n_heads=2))
    # a randomly initialised VQ of the same grid (16x16 pixels at downsampling 4 -> 4x4 codes of 16)
    vq = VQModel(VQConfig(image_size=16, channels=8, channel_mult=(1, 2, 2), z_channels=8, norm_groups=4,
                          codebook_size=16, attention=False)).eval()
    return Generator(model, corpus.vocab, codec=SequenceCodec(corpus.vocab, text_tokenizer), vq=vq), corpus


def test_image_block_has_exactly_the_grid_tokens_and_a_png(text_tokenizer, corpus, tmp_path):
    gen, c = _generator(text_tokenizer, type(corpus))
    prompt = gen.prompt("a red circle", open_image=True)
    out = gen.generate(prompt, GenerationConfig(max_images=1, cfg_scale=2.0, top_k=8, top_p=0.9))
    assert out[0] == c.grid_token and out[-1] == c.sp["<eoi>"] and len(out) == 1 + 16 + 1
    lo = c.vocab.image_codebook_offset
    assert all(lo <= t < lo + 16 for t in out[1:-1])
    parts = gen.decode(prompt + out)
    assert [k for k, _ in parts] == ["text", "image"] and parts[0][1] == "a red circle"
    buf = io.BytesIO()
    parts[1][1].save(buf, format="PNG")
    png = Image.open(io.BytesIO(buf.getvalue()))
    assert png.format == "PNG" and png.size == (16, 16) and png.mode == "RGB"


def test_kv_cache_gives_the_same_samples(text_tokenizer, corpus):
    gen, _ = _generator(text_tokenizer, type(corpus))
    prompt = gen.prompt("a blue square")
    for cfg in (1.0, 3.0):
        a = gen.generate(prompt, GenerationConfig(max_new_tokens=12, max_images=2, temperature=0, cfg_scale=cfg))
        b = gen.generate(prompt, GenerationConfig(max_new_tokens=12, max_images=2, temperature=0, cfg_scale=cfg,
                                                  use_cache=False))
        assert a == b


def test_generator_tells_the_model_which_grid_cell_it_draws(text_tokenizer, corpus):
    """The cells fed while sampling an image (one token at a time with the cache) are the ones training
    computes for the finished sequence (data.next_cells), so the model sees the positions it learned."""
    gen, c = _generator(text_tokenizer, type(corpus))
    fed = []
    forward = gen.model.forward

    def spy(tokens, **kw):
        fed.append(kw["cells"][0].clone())
        return forward(tokens, **kw)

    gen.model.forward = spy
    prompt = gen.prompt("a red circle", open_image=True)
    out = gen.generate(prompt, GenerationConfig(max_images=1, cfg_scale=1.0))
    fed = torch.cat(fed)  # every token fed: the prompt and grid token, then codes 0..14 (the last is not fed)
    assert len(fed) == len(prompt) + 16
    assert torch.equal(fed, torch.from_numpy(next_cells(np.array(prompt + out), c.vocab))[:len(fed)])
    assert [tuple(x) for x in fed[len(prompt):].tolist()] == [(k // 4, k % 4) for k in range(16)]


def test_guidance_runs_conditional_and_unconditional_rows_in_one_batch(text_tokenizer, corpus):
    gen, c = _generator(text_tokenizer, type(corpus))
    seen = []
    forward = gen.model.forward

    def spy(tokens, **kw):
        seen.append(tokens[:, 0].tolist() if kw.get("cache") is None or tokens.shape[1] > 1 else None)
        return forward(tokens, **kw)

    gen.model.forward = spy
    contexts = [gen.prompt("a red circle", open_image=True) + [c.grid_token],
                gen.prompt("a blue square left of a green triangle", open_image=True) + [c.grid_token]]
    codes = gen.image_codes(contexts, GenerationConfig(cfg_scale=4.0))
    assert codes.shape == (2, 4, 4) and 0 <= int(codes.min()) and int(codes.max()) < 16
    prefill = seen[0]  # first column of the left-padded batch: 2 conditional rows, then 2 unconditional
    assert len(prefill) == 4 and prefill[2] == prefill[3] == c.sp["<pad>"]
    seen.clear()
    gen.image_codes(contexts, GenerationConfig(cfg_scale=1.0))
    assert len(seen[0]) == 2


class Scripted(torch.nn.Module):
    """A stand-in model that writes two words, opens an image, and after two images ends the document. Inside
    image blocks it prefers a text token, which the generator must not emit there."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.config = model_preset("debug", vocab_size=vocab.size, max_seq_len=256)
        self.embed = torch.nn.Embedding(1, 1)
        s = vocab.special_tokens
        self.boi, self.eoi, self.eos = s["<boi>"], s["<eoi>"], s["<eos>"]

    def new_cache(self, batch, max_len=None):
        return None

    def forward(self, tokens, positions=None, doc_ids=None, cells=None, cache=None):
        B, T = tokens.shape
        logits = torch.zeros(B, T, self.vocab.size)
        word = self.vocab.text_offset + 3
        for b in range(B):
            row = tokens[b].tolist()
            since = row[::-1].index(self.eoi) if self.eoi in row else len(row)
            in_image = row.count(self.boi) > row.count(self.eoi)
            if in_image:
                logits[b, -1, word] = 10.0
                logits[b, -1, self.vocab.image_codebook_offset + 5] = 5.0
            elif since < 3:
                logits[b, -1, word] = 10.0
            else:
                logits[b, -1, self.boi if row.count(self.boi) < 2 else self.eos] = 10.0
        return logits


def test_interleaved_text_image_text(text_tokenizer, corpus):
    c = type(corpus)(grid=(4, 4), codes=16, text=text_tokenizer.vocab_size)
    gen, _ = _generator(text_tokenizer, type(corpus), model=Scripted(c.vocab))
    out = gen.generate([c.sp["<bos>"]], GenerationConfig(max_images=0, temperature=0, use_cache=False))
    word, code = c.vocab.text_offset + 3, c.vocab.image_codebook_offset + 5
    block = [c.sp["<boi>"], c.grid_token] + [code] * 16 + [c.sp["<eoi>"]]
    assert out == [word, word] + block + [word, word, word] + block + [word, word, word, c.sp["<eos>"]], out
    kinds = [k for k, _ in gen.decode(out)]
    assert kinds == ["text", "image", "text", "image", "text"]


def test_top_k_and_top_p_filtering():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all()
    kept = ~torch.isinf(filter_logits(logits, top_p=0.7)[0])
    assert kept.tolist() == [True, True, False, False]  # p(4)=0.64 < 0.7, the second crosses it
