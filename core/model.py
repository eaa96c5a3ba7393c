"""Multi-token-prediction (MTP) causal transformer.

Layout after Gloeckle et al. (2024): a shared trunk of ``n_trunk_layers`` pre-LN transformer
blocks feeds ``n_heads`` output heads, each one transformer block; head k (1-based) at position
t predicts token t+k. All heads share one final LayerNorm and one unembedding, tied to the
token embedding. Training loss = sum over heads of the cross-entropy of head k against the
sequence shifted by k.

Two ways to run it:

* ``forward(input_ids, labels=None)`` — full causal forward for training and checks; returns
  logits of every head, ``[B, T, n_heads, V]``.
* ``KVCache`` + ``MTPModel.extend`` / ``MTPModel.head_logits`` — incremental inference where
  stepping one token costs one token of compute. Every head block keeps its own key/value
  cache; because a head's keys/values at position t depend only on the trunk output at t,
  feeding a token always fills the caches of *all* heads with two small projections, while a
  head's full block runs only where its prediction is wanted.

A cache may sit on a frozen *base* cache of batch 1 (``KVCache.fork``): many continuations of
one shared prompt attend to the prompt's keys without copying them per row. ``KVCache.copy`` copies
only filled positions (beam reordering, forks, private copies of cached prefixes) and
``KVCache.rows`` views a chunk of rows, so chunks of one batch can be computed in parallel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ModelOutput


class MTPConfig(PretrainedConfig):
    model_type = "mtp_decoder"

    def __init__(
        self,
        vocab_size: int = 8192,
        d_model: int = 256,
        n_trunk_layers: int = 6,
        n_heads: int = 4,
        n_attn_heads: int = 4,
        max_len: int = 512,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bos_token_id: int = 0,
        eos_token_id: int = 0,
        **kwargs,
    ):
        if n_heads < 1:
            raise ValueError(f"n_heads must be >= 1, got {n_heads}")
        if d_model % n_attn_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_attn_heads ({n_attn_heads})")
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.n_trunk_layers = n_trunk_layers
        self.n_heads = n_heads
        self.n_attn_heads = n_attn_heads
        self.max_len = max_len
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)


@dataclass
class MTPOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [B, T, n_heads, V]
    head_losses: torch.Tensor | None = None  # [n_heads]


def _attend(q, k_new, v_new, base_k=None, base_v=None, causal_offset: int = 0):
    """Attention of q [B,H,T,D] over an optional shared base (batch 1, all visible) followed by
    this batch's own keys k_new [B,H,L,D], of which query i sees the first causal_offset+i+1."""
    B, H, T, D = q.shape
    L = k_new.shape[2]
    if base_k is None:
        if T == 1:
            return F.scaled_dot_product_attention(q, k_new, v_new)
        if L == T:
            return F.scaled_dot_product_attention(q, k_new, v_new, is_causal=True)
        mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(causal_offset)
        return F.scaled_dot_product_attention(q, k_new, v_new, attn_mask=mask)
    scale = 1.0 / math.sqrt(D)
    P = base_k.shape[2]
    # [H, B*T, D] @ [H, D, P]: the base is shared by every row without being copied.
    qh = q.permute(1, 0, 2, 3).reshape(H, B * T, D)
    s_base = torch.bmm(qh, base_k[0].transpose(1, 2)).view(H, B, T, P).permute(1, 0, 2, 3)
    s_own = torch.matmul(q, k_new.transpose(-1, -2))
    if T > 1 or causal_offset + 1 < L:
        mask = torch.ones(T, L, dtype=torch.bool, device=q.device).tril(causal_offset)
        s_own = s_own.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(torch.cat([s_base, s_own], dim=-1) * scale, dim=-1)
    p_base = probs[..., :P].permute(1, 0, 2, 3).reshape(H, B * T, P)
    out_base = torch.bmm(p_base, base_v[0]).view(H, B, T, D).permute(1, 0, 2, 3)
    return out_base + torch.matmul(probs[..., P:], v_new)


class Block(nn.Module):
    """Pre-LN transformer block (causal self-attention + GELU MLP)."""

    def __init__(self, cfg: MTPConfig):
        super().__init__()
        d = cfg.d_model
        self.n_attn = cfg.n_attn_heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, cfg.mlp_ratio * d)
        self.out = nn.Linear(cfg.mlp_ratio * d, d)
        self.drop = nn.Dropout(cfg.dropout)

    def _split(self, t):  # [B,T,d] -> [B,H,T,D]
        B, T, d = t.shape
        return t.view(B, T, self.n_attn, d // self.n_attn).transpose(1, 2)

    def _merge(self, t):
        B, H, T, D = t.shape
        return t.transpose(1, 2).reshape(B, T, H * D)

    def _mlp(self, x):
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)))))

    def forward(self, x):
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        a = F.scaled_dot_product_attention(self._split(q), self._split(k), self._split(v), is_causal=True)
        return self._mlp(x + self.drop(self.proj(self._merge(a))))

    def keys_values(self, x):
        """Keys and values [B,H,T,D] of inputs x [B,T,d] (no query, no MLP)."""
        d = x.shape[-1]
        k, v = F.linear(self.ln1(x), self.qkv.weight[d:], self.qkv.bias[d:]).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def step(self, x, layer_cache: LayerCache, start: int):
        """Run x [B,T,d] at positions start..start+T-1, writing its keys/values into the cache."""
        q, k, v = F.linear(self.ln1(x), self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        T = x.shape[1]
        layer_cache.write(start, self._split(k), self._split(v))
        return self.query(x, self._split(q), layer_cache, start + T)

    def query(self, x, q, layer_cache: LayerCache, upto: int):
        """Output for inputs x whose queries q sit at the last q.shape[2] positions before
        `upto`, attending over the cache up to `upto` (keys already written)."""
        T = q.shape[2]
        k_own, v_own = layer_cache.view(upto)
        a = _attend(q, k_own, v_own, layer_cache.base_k, layer_cache.base_v, k_own.shape[2] - T)
        x = x + F.linear(self._merge(a), self.proj.weight, self.proj.bias)
        h = F.gelu(F.linear(self.ln2(x), self.fc.weight, self.fc.bias))
        return x + F.linear(h, self.out.weight, self.out.bias)


class LayerCache:
    """Key/value buffers of one block: an optional frozen shared base, then own positions."""

    def __init__(self, batch, n_attn, capacity, head_dim, dtype, device, base: LayerCache | None = None):
        self.k = torch.empty(batch, n_attn, capacity, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.base_k = self.base_v = None
        if base is not None:
            self.base_k, self.base_v = base.view_all()
        self.offset = 0 if base is None else self.base_k.shape[2]

    def write(self, start: int, k, v):
        s = start - self.offset
        self.k[:, :, s : s + k.shape[2]] = k
        self.v[:, :, s : s + v.shape[2]] = v

    def view(self, upto: int):
        return self.k[:, :, : upto - self.offset], self.v[:, :, : upto - self.offset]

    def view_all(self):
        return self.k, self.v

    def rows(self, a: int, b: int) -> LayerCache:
        """Rows [a, b) as a view sharing this cache's buffers (writes go through)."""
        view = LayerCache.__new__(LayerCache)
        view.__dict__.update(self.__dict__)
        view.k, view.v = self.k[a:b], self.v[a:b]
        return view

    def copy(self, filled: int, capacity: int, idx: torch.Tensor | None) -> LayerCache:
        """New buffers of ``capacity`` own positions holding the first ``filled`` own positions of the
        rows ``idx`` (all rows when None); only filled positions are copied, the base stays shared."""
        k, v = self.k[:, :, :filled], self.v[:, :, :filled]
        if idx is not None:
            k, v = k.index_select(0, idx), v.index_select(0, idx)
        new = LayerCache.__new__(LayerCache)
        new.__dict__.update(self.__dict__)
        B, H, _, D = k.shape
        new.k = self.k.new_empty(B, H, capacity, D)
        new.v = self.v.new_empty(B, H, capacity, D)
        new.k[:, :, :filled] = k
        new.v[:, :, :filled] = v
        return new


class KVCache:
    """Cache for trunk blocks, head blocks and trunk outputs at every cached position.

    ``length`` is the number of positions filled (absolute, including any base). Rolling back is
    setting a shorter length: later writes overwrite the rejected positions.
    """

    def __init__(self, model: MTPModel, batch: int, capacity: int, base: KVCache | None = None):
        cfg = model.config
        p = next(model.parameters())
        self.batch, self.capacity = batch, capacity
        self.offset = 0 if base is None else base.length
        if base is not None and base.batch != 1:
            raise ValueError("a base cache must have batch 1")
        hd = cfg.d_model // cfg.n_attn_heads
        n_blocks = cfg.n_trunk_layers + cfg.n_heads
        self.layers = [
            LayerCache(batch, cfg.n_attn_heads, capacity, hd, p.dtype, p.device,
                       None if base is None else base.frozen_layer(i))
            for i in range(n_blocks)
        ]
        self.z = torch.empty(batch, capacity, cfg.d_model, dtype=p.dtype, device=p.device)
        self.length = self.offset
        self._base = base

    def frozen_layer(self, i) -> LayerCache:
        """Layer i truncated to the filled length, as a base for forks."""
        lc = self.layers[i]
        view = LayerCache.__new__(LayerCache)
        view.k, view.v = lc.view(self.length)
        view.base_k = view.base_v = None
        view.offset = 0
        return view

    def fork(self, model: MTPModel, batch: int, capacity: int) -> KVCache:
        if self.offset:
            raise ValueError("cannot fork a cache that is itself a fork")
        return KVCache(model, batch, capacity, base=self)

    def rows(self, a: int, b: int) -> KVCache:
        """Rows [a, b) as a cache view sharing this cache's buffers: ``MTPModel.extend`` on it writes
        into this cache (row chunks computed in parallel). The caller sets ``length`` afterwards."""
        view = KVCache.__new__(KVCache)
        view.__dict__.update(self.__dict__)
        view.batch = b - a
        view.layers = [lc.rows(a, b) for lc in self.layers]
        view.z = self.z[a:b]
        return view

    def copy(self, length: int | None = None, capacity: int | None = None,
             rows: torch.Tensor | None = None) -> KVCache:
        """A cache holding the first ``length`` positions (default: all filled) of the rows ``rows``
        (default: all), with room for ``capacity`` own positions (default: this cache's). Copies the
        filled positions only, never the whole capacity; a base stays shared, not copied."""
        length = self.length if length is None else length
        capacity = self.capacity if capacity is None else capacity
        if not self.offset <= length <= self.length:
            raise ValueError(f"copy length must be in [{self.offset}, {self.length}], got {length}")
        filled = length - self.offset
        if capacity < filled:
            raise ValueError(f"capacity {capacity} is below the {filled} positions to copy")
        new = KVCache.__new__(KVCache)
        new.__dict__.update(self.__dict__)
        new.layers = [lc.copy(filled, capacity, rows) for lc in self.layers]
        z = self.z[:, :filled] if rows is None else self.z[:, :filled].index_select(0, rows)
        new.z = self.z.new_empty(z.shape[0], capacity, z.shape[2])
        new.z[:, :filled] = z
        new.batch, new.capacity, new.length = z.shape[0], capacity, length
        return new

    def rollback(self, length: int):
        if not self.offset <= length <= self.length:
            raise ValueError(f"rollback length must be in [{self.offset}, {self.length}], got {length}")
        self.length = length

    def z_at(self, position: int):
        if position < self.offset:
            raise ValueError("trunk output of a base position is not held by a fork")
        return self.z[:, position - self.offset]


class MTPModel(PreTrainedModel):
    config_class = MTPConfig
    base_model_prefix = "mtp"
    _supports_sdpa = True

    def __init__(self, config: MTPConfig):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = nn.Embedding(config.max_len, config.d_model)
        self.trunk = nn.ModuleList(Block(config) for _ in range(config.n_trunk_layers))
        self.heads = nn.ModuleList(Block(config) for _ in range(config.n_heads))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            std = 0.02
            if module.out_features == self.config.d_model:  # residual projections
                std = 0.02 / math.sqrt(2 * (self.config.n_trunk_layers + 1))
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, value):
        self.wte = value

    def unembed(self, h):
        return F.linear(self.ln_f(h), self.wte.weight)

    def forward(self, input_ids, labels=None, **_):
        B, T = input_ids.shape
        if self.config.max_len < T:
            raise ValueError(f"sequence length {T} exceeds max_len {self.config.max_len}")
        pos = torch.arange(T, device=input_ids.device)
        z = self.wte(input_ids) + self.wpe(pos)
        for block in self.trunk:
            z = block(z)
        logits = torch.stack([self.unembed(head(z)) for head in self.heads], dim=2)
        loss = head_losses = None
        if labels is not None:
            head_losses = mtp_losses(logits, labels)
            loss = head_losses.sum()
        return MTPOutput(loss=loss, logits=logits, head_losses=head_losses)

    # ---- incremental inference -------------------------------------------------------------
    def new_cache(self, batch: int, capacity: int) -> KVCache:
        if capacity > self.config.max_len:
            raise ValueError(f"capacity {capacity} exceeds the model's context of {self.config.max_len} tokens")
        return KVCache(self, batch, capacity)

    def extend(self, cache: KVCache, input_ids: torch.Tensor) -> torch.Tensor:
        """Feed input_ids [B,T] at the cache's next positions; fill every block's cache and the
        trunk outputs; return head-1 logits at the T new positions, [B,T,V]."""
        B, T = input_ids.shape
        start = cache.length
        if start + T > cache.offset + cache.capacity:
            raise ValueError(f"cache capacity exceeded: {start + T} > {cache.offset + cache.capacity}")
        z = self.wte(input_ids) + self.wpe.weight[start : start + T]
        n_trunk = self.config.n_trunk_layers
        for i, block in enumerate(self.trunk):
            z = block.step(z, cache.layers[i], start)
        cache.z[:, start - cache.offset : start - cache.offset + T] = z
        for j, head in enumerate(self.heads[1:], start=1):
            k, v = head.keys_values(z)
            cache.layers[n_trunk + j].write(start, k, v)
        cache.length = start + T
        return self.unembed(self.heads[0].step(z, cache.layers[n_trunk], start))

    def head_logits(self, cache: KVCache, position: int, heads=None) -> torch.Tensor:
        """Logits [B, n, V] of the given heads (0-based, default all) at an absolute cached
        position, attending over the cache up to and including that position."""
        if not cache.offset <= position < cache.length:
            raise ValueError(f"position must be a cached position in [{cache.offset}, {cache.length}), got {position}")
        heads = range(self.config.n_heads) if heads is None else heads
        z = cache.z_at(position)[:, None, :]
        d = z.shape[-1]
        n_trunk = self.config.n_trunk_layers
        outs = []
        for j in heads:
            block = self.heads[j]
            q = block._split(F.linear(block.ln1(z), block.qkv.weight[:d], block.qkv.bias[:d]))
            outs.append(block.query(z, q, cache.layers[n_trunk + j], position + 1))
        return self.unembed(torch.cat(outs, dim=1))  # one unembedding for all heads


def mtp_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-head mean cross-entropy: head k (0-based j=k-1) at position t against labels[t+k].
    Positions whose target falls past the end, or is -100, are masked."""
    n_heads = logits.shape[2]
    losses = []
    for j in range(n_heads):
        shift = j + 1
        lg = logits[:, : logits.shape[1] - shift, j]
        tg = labels[:, shift:]
        losses.append(F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), tg.reshape(-1), ignore_index=-100))
    return torch.stack(losses)
