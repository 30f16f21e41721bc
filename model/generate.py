"""Sample interleaved text and images from a trained checkpoint.

Text continues until the model opens an image (samples <boi>). Inside an image block sampling follows the
codec's layout (interleaf.tokenizers.codec): after <boi> only a grid token may come (the vocabulary's grid
tokens, today one), then exactly rows * cols tokens restricted to the image-code range, then <eoi> is forced
and text goes on. Image blocks are decoded by the VQ decoder to PNG files, so one sample can be text, image,
text, image ...

Classifier-free guidance (Ho & Salimans 2022; as LlamaGen and Chameleon apply it to image tokens): the
conditional rows (the context so far) and the unconditional rows (<bos> <boi> <grid>, what caption dropout
trained) run in one batch, left-padded to a common length, and image-code logits are
uncond + scale * (cond - uncond). A KV cache makes each step cost one token per row.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from interleaf import precision
from interleaf.model.data import next_cells
from interleaf.model.transformer import PAD_DOC, Transformer
from interleaf.schemas.tokens import Vocabulary
from interleaf.tokenizers.layout import grid_tokens

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class GenerationConfig:
    max_new_tokens: int = 128  # budget for text tokens (an image block once opened is always completed)
    max_images: int = 1  # stop after this many images (0: no limit)
    temperature: float = 1.0  # softmax temperature; 0 = greedy
    top_k: int = 0  # sample among the k most likely tokens (0: all)
    top_p: float = 1.0  # nucleus sampling: the smallest set of tokens with this much probability
    cfg_scale: float = 1.0  # classifier-free guidance on image codes; 1 = off (no unconditional rows)
    use_cache: bool = True  # KV cache; False recomputes the whole sequence every step (for benchmarks)
    seed: int = 0  # sampling generator seed
    # "fp32" (default), "auto" or "bf16": interleaf.precision's rule ("auto": bf16 autocast only where the
    # hardware has native bf16). fp32 by default so that a seed gives the same images on every machine.
    precision: str = "fp32"


def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering: logits (B, V) with the rejected entries set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)  # (B, V)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample(logits: torch.Tensor, allowed: torch.Tensor, config: GenerationConfig,
           generator: torch.Generator) -> torch.Tensor:
    """One token per row from logits (B, V), restricted to `allowed` (V,) bool. Returns (B,) long."""
    logits = logits.float().masked_fill(~allowed, float("-inf"))
    if config.temperature <= 0:
        return logits.argmax(-1)
    logits = filter_logits(logits / config.temperature, top_k=config.top_k, top_p=config.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


class _Rows:
    """Rows decoded together: left-padded contexts, then one new token per row per step, with or without a
    KV cache (without one every step recomputes the whole sequence, for the cache's benchmark)."""

    def __init__(self, model: Transformer, vocab: Vocabulary, contexts: list[list[int]], *, pad_id: int,
                 extra: int, use_cache: bool, chosen: precision.Precision | None = None):
        self.model = model
        device = model.embed.weight.device
        self.chosen = chosen or precision.Precision("fp32", "default")
        B, T = len(contexts), max(len(c) for c in contexts)
        self.tokens = torch.full((B, T), pad_id, dtype=torch.long, device=device)  # (B, T)
        self.doc = torch.full((B, T), PAD_DOC, dtype=torch.long, device=device)
        self.pos = torch.zeros((B, T), dtype=torch.long, device=device)
        self.cells = torch.full((B, T, 2), -1, dtype=torch.long, device=device)  # (B, T, 2), data.next_cells
        for b, c in enumerate(contexts):
            n = len(c)
            self.tokens[b, T - n:] = torch.tensor(c, device=device)
            self.doc[b, T - n:] = 0
            self.pos[b, T - n:] = torch.arange(n, device=device)
            self.cells[b, T - n:] = torch.from_numpy(next_cells(np.asarray(c), vocab)).to(device)
        self.cache = model.new_cache(B, T + extra) if use_cache else None
        self.next_pos = self.pos[:, -1:].clone()  # (B, 1) position of the latest token
        self._zeros = torch.zeros((B, 1), dtype=torch.long, device=device)  # document id of new tokens
        self._no_cell = torch.full((B, 1, 2), -1, dtype=torch.long, device=device)

    @torch.inference_mode()
    def prefill(self) -> torch.Tensor:
        """Logits (B, V) after the contexts."""
        return self._run(self.tokens, positions=self.pos, doc_ids=self.doc, cells=self.cells,
                         cache=self.cache)

    @torch.inference_mode()
    def step(self, next_tokens: torch.Tensor, cell: tuple[int, int] | None = None) -> torch.Tensor:
        """Append next_tokens (B,) and return the logits (B, V) after them. `cell`: the (row, column) of the
        image code these logits are for, None when they are not for one."""
        B = len(next_tokens)
        new, doc = next_tokens[:, None], self._zeros[:B]
        self.next_pos += 1
        cells = None if cell is None else torch.tensor(cell, device=new.device).expand(B, 1, 2)
        if self.cache is not None:  # one token per row: nothing else to keep
            return self._run(new, positions=self.next_pos, doc_ids=doc, cells=cells, cache=self.cache)
        self.tokens = torch.cat([self.tokens, new], 1)
        self.pos, self.doc = torch.cat([self.pos, self.next_pos], 1), torch.cat([self.doc, doc], 1)
        self.cells = torch.cat([self.cells, self._no_cell[:B] if cells is None else cells], 1)
        return self._run(self.tokens, positions=self.pos, doc_ids=self.doc, cells=self.cells)

    def _run(self, tokens: torch.Tensor, **kwargs) -> torch.Tensor:
        """The model's fp32 logits (B, V) at the last position, under the chosen precision."""
        with precision.autocast(self.chosen, tokens.device.type):
            return self.model(tokens, **kwargs)[:, -1].float()


class Generator:
    """A trained model with its vocabulary, and optionally its text tokenizer (codec) and image tokenizer
    (`vq`: a tokenizers.image.ImageTokenizer, the VQ or any registered kind) to decode images with."""

    def __init__(self, model: Transformer, vocab: Vocabulary, *, codec=None, vq=None):
        self.model, self.vocab, self.codec, self.vq = model.eval(), vocab, codec, vq
        s = vocab.special_tokens
        self.bos, self.eos, self.pad = s["<bos>"], s["<eos>"], s["<pad>"]
        self.boi, self.eoi = s["<boi>"], s["<eoi>"]
        self.grids = grid_tokens(vocab)  # grid token id -> (rows, cols)
        if not self.grids:
            raise ValueError("the vocabulary has no grid token (<grid:RxC>); it was not made by the interleaf "
                             "sequence codec")
        V = model.config.vocab_size
        lo, hi = vocab.image_codebook_offset, vocab.image_codebook_offset + vocab.image_codebook_size
        device = model.embed.weight.device
        ids = torch.arange(V, device=device)
        self.image_allowed = (ids >= lo) & (ids < hi)  # (V,)
        self.grid_allowed = torch.isin(ids, torch.tensor(sorted(self.grids), device=device))
        # outside images: text tokens, <boi>, <eos> and the other non-structural specials (<sep>)
        structural = torch.tensor([self.pad, self.bos, self.eoi, *self.grids], device=device)
        self.text_allowed = ~self.image_allowed & ~torch.isin(ids, structural)
        self.unconditional = [self.bos, self.boi]  # the context caption dropout trained (grid token follows)

    # ------------------------------------------------------------ loading

    @classmethod
    def from_checkpoint(cls, path: str, device: str = "cpu", *, text_tokenizer: str | None = None,
                        vq: str | None = None) -> Generator:
        """Model, vocabulary and the tokenizer copies saved with the checkpoint (or the files given)."""
        from interleaf.model.train import load_checkpoint
        from interleaf.tokenizers.codec import SequenceCodec

        model, meta = load_checkpoint(path, device)
        vocab = Vocabulary.from_json(meta["vocabulary"])
        files = {role: os.path.join(meta["path"], rel) for role, rel in meta.get("tokenizer_files", {}).items()}
        text_path, vq_path = text_tokenizer or files.get("text"), vq or files.get("image")
        text = vq_model = None
        if text_path:
            from interleaf.tokenizers.text_bpe import TextTokenizer
            text = TextTokenizer.load(text_path)
        if vq_path:
            from interleaf.tokenizers import image as image_tokenizers
            vq_model = image_tokenizers.load(vq_path, device)
        return cls(model, vocab, codec=SequenceCodec(vocab, text), vq=vq_model)

    # ------------------------------------------------------------ prompts

    def prompt(self, text: str, *, open_image: bool = False) -> list[int]:
        """<bos> + the text's tokens (+ <boi> to ask for an image right away)."""
        if self.codec is None or self.codec.text is None:
            raise ValueError("no text tokenizer: pass the tokenizer.json the shards were made with")
        return [self.bos, *self.codec.text_ids(text), *([self.boi] if open_image else [])]

    # ------------------------------------------------------------ sampling

    def image_codes(self, contexts: list[list[int]], config: GenerationConfig,
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Complete an image block after each context (ending in <boi> <grid:RxC>, one grid for all rows).

        Returns codebook indices (B, R, C). With cfg_scale != 1 the batch holds B conditional and B
        unconditional rows.
        """
        generator = generator or torch.Generator().manual_seed(config.seed)
        grids = {self.grids.get(c[-1]) for c in contexts}
        if None in grids or any(c[-2] != self.boi for c in contexts) or len(grids) != 1:
            raise ValueError("every context must end with <boi> and one and the same grid token")
        rows, cols = grids.pop()
        n, B = rows * cols, len(contexts)
        longest = max(len(c) for c in contexts)
        if longest + n > self.model.config.max_seq_len:
            raise ValueError(f"a context of {longest} tokens leaves no room for {n} image codes within the "
                             f"model's max_seq_len {self.model.config.max_seq_len}")
        guided = config.cfg_scale != 1.0
        batch = contexts + ([self.unconditional + [contexts[0][-1]]] * B if guided else [])
        state = _Rows(self.model, self.vocab, batch, pad_id=self.pad, extra=n, use_cache=config.use_cache,
                      chosen=self._precision(config))
        logits = state.prefill()  # (B or 2B, V)
        codes = []
        for i in range(n):
            if guided:
                cond, uncond = logits[:B].float(), logits[B:].float()
                logits = uncond + config.cfg_scale * (cond - uncond)
            token = sample(logits, self.image_allowed, config, generator)  # (B,)
            codes.append(token)
            if i + 1 < n:
                logits = state.step(torch.cat([token, token]) if guided else token, divmod(i + 1, cols))
        codes = torch.stack(codes, 1) - self.vocab.image_codebook_offset  # (B, n)
        return codes.view(B, rows, cols)

    def generate(self, prompt: list[int], config: GenerationConfig) -> list[int]:
        """Tokens sampled after `prompt` (a list of ids starting with <bos>): text, image blocks, ... until
        <eos>, the text budget, max_images, or the model's max_seq_len. An image block once opened is
        completed and closed."""
        generator = torch.Generator().manual_seed(config.seed)
        seq, budget, images = list(prompt), config.max_new_tokens, 0
        limit = self.model.config.max_seq_len
        state, logits = None, None
        while True:
            if seq[-1] == self.boi:
                if len(self.grids) == 1:
                    grid = next(iter(self.grids))
                else:
                    if state is None:
                        logits = self._rows_for(seq, config).prefill()
                    grid = int(sample(logits, self.grid_allowed, config, generator)[0])
                rows, cols = self.grids[grid]
                if len(seq) + rows * cols + 2 > limit:
                    log.warning("no room for an image block within max_seq_len %d; stopping", limit)
                    seq.pop()
                    break
                seq.append(grid)
                codes = self.image_codes([seq], config, generator)[0].flatten()
                seq += [int(c) + self.vocab.image_codebook_offset for c in codes] + [self.eoi]
                images += 1
                state = None  # image rows ran on their own batch: prefill the text rows again
                if config.max_images and images >= config.max_images:
                    break
                continue
            if budget <= 0 or seq[-1] == self.eos or len(seq) >= limit:
                break
            if state is None:
                state = self._rows_for(seq, config)
                logits = state.prefill()
            token = int(sample(logits, self.text_allowed, config, generator)[0])
            seq.append(token)
            budget -= 1
            logits = state.step(torch.tensor([token], device=state.tokens.device))
        return seq[len(prompt):]

    def _rows_for(self, seq: list[int], config: GenerationConfig) -> _Rows:
        return _Rows(self.model, self.vocab, [seq], pad_id=self.pad, extra=config.max_new_tokens + 2,
                     use_cache=config.use_cache, chosen=self._precision(config))

    def _precision(self, config: GenerationConfig) -> precision.Precision:
        return precision.choose(config.precision, self.model.embed.weight.device, purpose="generation")

    # ------------------------------------------------------------ decoding

    def decode_images(self, codes: torch.Tensor) -> list[Image.Image]:
        """Decode codes (B, R, C) to RGB images with the image tokenizer (the VQ, or any registered kind)."""
        if self.vq is None:
            raise ValueError("no VQ decoder: the checkpoint has no image tokenizer copy; pass the VQ checkpoint "
                             "the shards were made with")
        from interleaf.tokenizers.image import tensor_to_image
        images = self.vq.decode(codes)  # (B, 3, H, W) in [-1, 1], on the tokenizer's device
        return [tensor_to_image(x) for x in images]

    def decode(self, tokens: list[int]) -> list[tuple[str, object]]:
        """[("text", str) | ("image", PIL image)] of generated tokens (malformed blocks skipped, logged)."""
        if self.codec is None or self.codec.text is None:
            raise ValueError("no text tokenizer to decode text with")
        out = []
        for kind, value in self.codec.decode(tokens, strict=False):
            if kind == "image":
                value = self.decode_images(torch.tensor([value]))[0]
            out.append((kind, value))
        return out
