"""The reference early-fusion transformer: one decoder over one vocabulary of text and image tokens.

Reads top to bottom like nanoGPT's model.py. Chameleon's stability measures are built in: RMSNorm
pre-normalisation, SwiGLU feed-forward, rotary positions, QK-normalisation (a norm on queries and keys per
head, Chameleon §2.3) and an optional z-loss on the softmax normaliser (computed by the trainer).

Packed rows hold several documents, so attention is masked by document (a token sees only earlier tokens of
its own document) and rotary positions restart at each document. The same mask serves generation: a KV cache
keeps the document id of every cached position, so a classifier-free-guidance batch whose unconditional row is
left-padded attends to nothing of its padding.

Shapes: B batch, T tokens, C model width, H heads, D head width, V vocabulary, S cached length.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from interleaf.model.presets import PRESETS

PAD_DOC = -1  # document id of padding: no other token attends to it


@dataclass(kw_only=True, frozen=True)
class ModelConfig:
    vocab_size: int  # joint vocabulary (specials + image codes + text), read from the token shards
    dim: int = 256  # residual stream width C
    n_layers: int = 6  # transformer blocks
    n_heads: int = 8  # attention heads H; head width D = dim // n_heads (must be even for rotary)
    mlp_hidden: int = 0  # SwiGLU hidden width; 0 = 8/3 * dim rounded up to a multiple of 64 (LLaMA)
    max_seq_len: int = 512  # longest position the rotary tables cover (a packed row, or prompt + generation)
    rope_theta: float = 10000.0  # rotary base (RoFormer / LLaMA)
    qk_norm: bool = True  # RMSNorm on queries and keys per head (Chameleon §2.3; stops logit drift)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    tie_embeddings: bool = False  # share the input embedding with the output head
    init_std: float = 0.02  # normal init of weights (GPT-2); residual projections scaled by 1/sqrt(2 layers)
    grid_positions: int = 0  # learned row and column embeddings for image codes in grids of up to this many
    # rows and columns (0: none, positions are only the rotary 1D ones); see Transformer.forward's `cells`

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 64 * math.ceil(8 * self.dim / 3 / 64)

    def validate(self) -> None:
        if self.dim % self.n_heads or self.head_dim % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even width")
        if self.vocab_size < 1 or self.max_seq_len < 1 or self.n_layers < 1 or self.grid_positions < 0:
            raise ValueError(f"vocab_size, max_seq_len and n_layers must be positive: {self}")


def model_preset(name: str, *, vocab_size: int, **overrides) -> ModelConfig:
    """A preset's config for a vocabulary, with any field overridden (e.g. dim=32 in tests)."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {', '.join(PRESETS)}")
    config = ModelConfig(vocab_size=vocab_size, **{**PRESETS[name], **overrides})
    config.validate()
    return config


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019): no mean subtraction, no bias; computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim)
        # one fused op (torch >= 2.4); the float32 round trip keeps bf16 activations accurate under autocast
        y = F.rms_norm(x.float(), self.weight.shape, self.weight.float(), self.eps)
        return y.type_as(x)


def rotary_tables(head_dim: int, max_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * frequency, each (max_len, D/2)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (D/2,)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), freqs)  # (max_len, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head (GPT-NeoX layout). x (B, H, T, D); cos, sin (B, 1, T, D/2).
    Computed and returned in float32."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, H, T, D/2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class KVCache:
    """Keys and values of every layer for positions already seen, with their document ids (PAD_DOC = padding).

    Preallocated to `max_len` positions; `length` positions are filled. Decoding one token then costs one
    token's projections plus attention over the cache instead of a forward pass over the whole sequence.
    """

    def __init__(self, config: ModelConfig, batch: int, max_len: int, *, device, dtype):
        shape = (batch, config.n_heads, max_len, config.head_dim)  # (B, H, S_max, D)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layers)]
        self.doc = torch.full((batch, max_len), PAD_DOC, dtype=torch.long, device=device)  # (B, S_max)
        self.length = 0
        self.one_document = False  # every row one document from position 0, no padding: no mask needed

    @property
    def max_len(self) -> int:
        return self.doc.shape[1]

    def select(self, rows: list[int]) -> KVCache:
        """A cache holding only some batch rows (e.g. the conditional row after a guided image block)."""
        out = KVCache.__new__(KVCache)
        index = torch.tensor(rows, device=self.doc.device)
        out.k = [k.index_select(0, index) for k in self.k]
        out.v = [v.index_select(0, index) for v in self.v]
        out.doc = self.doc.index_select(0, index)
        out.length, out.one_document = self.length, self.one_document
        return out


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.n_heads, self.head_dim = layer, config.n_heads, config.head_dim
        self.qkv = nn.Linear(config.dim, 3 * config.dim, bias=False)
        self.proj = nn.Linear(config.dim, config.dim, bias=False)
        self.q_norm = RMSNorm(config.head_dim, config.norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(config.head_dim, config.norm_eps) if config.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)  # (B, T, H, D) each
        q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        # Attention runs in float32 on the CPU: its bf16 flash kernel is 1.4-5x slower there (measured with
        # torch 2.14 on AVX512-BF16 / AMX; bench/model_bench.py), and the matrices are small anyway.
        dtype = torch.float32 if x.device.type == "cpu" else v.dtype
        q, k, v = apply_rotary(q, cos, sin).to(dtype), apply_rotary(k, cos, sin).to(dtype), v.to(dtype)
        if cache is not None:  # write this step's keys at [length, length + T), attend over the filled part
            end = cache.length + T
            cache.k[self.layer][:, :, cache.length:end] = k
            cache.v[self.layer][:, :, cache.length:end] = v
            k, v = cache.k[self.layer][:, :, :end].to(dtype), cache.v[self.layer][:, :, :end].to(dtype)  # (B,H,S,D)
        with torch.autocast("cpu", enabled=False) if x.device.type == "cpu" else nullcontext():  # (or bf16)
            # mask None: one document per row from position 0, padding after it: causal attention alone
            causal = mask is None and T > 1  # (one new token attends to every cached position)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)  # (B, H, T, D)
        return self.proj(y.transpose(1, 2).reshape(B, T, C).type_as(x))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate = nn.Linear(config.dim, config.hidden, bias=False)
        self.up = nn.Linear(config.dim, config.hidden, bias=False)
        self.down = nn.Linear(config.hidden, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = RMSNorm(config.dim, config.norm_eps)
        self.attn = Attention(config, layer)
        self.mlp_norm = RMSNorm(config.dim, config.norm_eps)
        self.mlp = SwiGLU(config)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        if config.grid_positions:  # where in its image grid the next code goes: row and column embeddings
            self.row_embed = nn.Embedding(config.grid_positions, config.dim)
            self.col_embed = nn.Embedding(config.grid_positions, config.dim)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.head.weight = self.embed.weight
        cos, sin = rotary_tables(config.head_dim, config.max_seq_len, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)  # (max_seq_len, D/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2: scale the projections that add into the residual stream
            for w in (block.attn.proj.weight, block.mlp.down.weight):
                nn.init.normal_(w, std=config.init_std / math.sqrt(2 * config.n_layers))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.config.init_std)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        p = self.embed.weight
        return KVCache(self.config, batch, max_len or self.config.max_seq_len, device=p.device, dtype=p.dtype)

    def forward(self, tokens: torch.Tensor, *, positions: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, cells: torch.Tensor | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, V) for tokens (B, T).

        positions (B, T): rotary position of each token within its document (default 0..T-1, continuing
        after the cache). doc_ids (B, T): document of each token (default one document; PAD_DOC for
        padding); a token attends to earlier tokens of its own document only. With a cache, the tokens are
        appended to it and attend to its filled part as well. cells (B, T, 2): the (row, column) in its image
        grid of the code each token predicts, (-1, -1) where the next token is no image code (data.next_cells);
        with `grid_positions` their embeddings are added to the token embeddings, so the model knows where in
        the image it draws without counting positions since <boi> (LlamaGen gives image tokens 2D rotary
        positions for the same reason).
        """
        B, T = tokens.shape
        start = cache.length if cache is not None else 0
        if positions is None:
            positions = torch.arange(start, start + T, device=tokens.device).expand(B, T)
        if doc_ids is None:
            doc_ids = torch.zeros(B, T, dtype=torch.long, device=tokens.device)
        if int(positions.max()) >= self.config.max_seq_len:
            raise ValueError(f"position {int(positions.max())} beyond max_seq_len {self.config.max_seq_len}")
        cos = self.rope_cos[positions].unsqueeze(1)  # (B, 1, T, D/2)
        sin = self.rope_sin[positions].unsqueeze(1)
        if cache is None:
            key_docs, key_index = doc_ids, torch.arange(T, device=tokens.device)
        else:
            if start + T > cache.max_len:
                raise ValueError(f"KV cache of {cache.max_len} positions cannot take {start + T}")
            cache.doc[:, start:start + T] = doc_ids
            key_docs, key_index = cache.doc[:, :start + T], torch.arange(start + T, device=tokens.device)
        if cache is None:
            one_document = _one_document_per_row(doc_ids)
        elif start == 0:  # prefill: does every row hold one document and no padding?
            cache.one_document = one_document = bool((doc_ids == 0).all())
        else:  # then one more token of that document sees the whole cache
            one_document = cache.one_document and T == 1 and bool((doc_ids == 0).all())
        if one_document:
            mask = None  # causal attention alone keeps every token within its document (the fast kernels)
        else:
            query_index = torch.arange(start, start + T, device=tokens.device)
            causal = key_index[None, :] <= query_index[:, None]  # (T, S)
            mask = ((doc_ids[:, :, None] == key_docs[:, None, :]) & causal).unsqueeze(1)  # (B, 1, T, S)
            if tokens.device.type == "cpu":  # CPU SDPA converts a boolean mask in every layer: convert it once
                mask = torch.zeros(mask.shape, device=tokens.device).masked_fill_(~mask, float("-inf"))

        x = self.embed(tokens)  # (B, T, C)
        if self.config.grid_positions and cells is not None:
            at = (cells[..., 0] >= 0).unsqueeze(-1)  # (B, T, 1)
            rc = cells.clamp(0, self.config.grid_positions - 1)
            x = x + (self.row_embed(rc[..., 0]) + self.col_embed(rc[..., 1])) * at
        for block in self.blocks:
            x = block(x, cos, sin, mask, cache)
        if cache is not None:
            cache.length = start + T
        return self.head(self.norm(x))  # (B, T, V)


def _one_document_per_row(doc_ids: torch.Tensor) -> bool:
    """Does every row hold one document starting at position 0, with only padding after it?"""
    return bool((doc_ids[:, 0] == 0).all() and (doc_ids <= 0).all()
                and (doc_ids[:, 1:] <= doc_ids[:, :-1]).all())


def count_params(config: ModelConfig) -> int:
    """Parameters of a config, counted on the meta device (no memory used)."""
    with torch.device("meta"):
        return Transformer(replace(config, max_seq_len=1)).num_params()
