"""Action decoder: transformer layers over the L = H x D action slots.

Every layer attends jointly over [prefix ; action slots] (a prefix-LM): the prefix never
attends to action slots (it is the backbone's output, fixed for the whole chunk), action
slots attend to the whole prefix and to each other, bidirectionally for masked diffusion or
causally for the autoregressive baseline. Each layer's prefix keys/values depend only on the
prefix, so they are computed once per chunk (`prefix_cache`) and reused by every refinement
step or every autoregressive pass.

Token ids: 0..bins-1 are action bins, `bins` is [MASK], `bins + 1` is [BOS] (autoregressive).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DecoderConfig:
    d_model: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.d_model % self.heads:
            raise ValueError(f"decoder.d_model ({self.d_model}) must divide by decoder.heads ({self.heads})")
        if self.layers < 1:
            raise ValueError(f"decoder.layers must be >= 1, got {self.layers}")


KV = tuple[torch.Tensor, torch.Tensor]  # each (B, heads, S, head_dim)


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        return x.view(b, s, self.heads, d // self.heads).transpose(1, 2)  # (B, heads, S, hd)

    def keys_values(self, x: torch.Tensor) -> KV:
        k, v = self.kv(self.ln1(x)).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def forward(self, x: torch.Tensor, prefix_kv: KV, mask: torch.Tensor, past: KV | None = None) -> tuple:
        """x: (B, La, d) action slots; mask: (B, 1, La, P + S) bool, True = may attend."""
        h = self.ln1(x)
        q = self._split(self.q(h))
        k, v = self.kv(h).chunk(2, dim=-1)
        k, v = self._split(k), self._split(v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        keys = torch.cat([prefix_kv[0], k], dim=2)  # (B, heads, P + S, hd)
        values = torch.cat([prefix_kv[1], v], dim=2)
        a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, heads, La, hd)
        a = a.transpose(1, 2).reshape(x.shape)  # (B, La, d)
        x = x + self.drop(self.out(a))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, (k, v)


class ActionDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, prefix_dim: int, chunk_size: int, action_dim: int, bins: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.bins = bins
        self.mask_id = bins
        self.bos_id = bins + 1
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        self.token_emb = nn.Embedding(bins + 2, cfg.d_model)  # bins + [MASK] + [BOS], all trainable
        self.step_emb = nn.Parameter(torch.randn(chunk_size, 1, cfg.d_model) * 0.02)  # which future step
        self.dim_emb = nn.Parameter(torch.randn(1, action_dim, cfg.d_model) * 0.02)  # which action dimension
        self.prefix_proj = nn.Linear(prefix_dim, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, bins)

    @property
    def num_slots(self) -> int:
        return self.chunk_size * self.action_dim

    def slot_embedding(self) -> torch.Tensor:
        return (self.step_emb + self.dim_emb).reshape(self.num_slots, -1)  # (L, d), slot = h * D + d

    def prefix_cache(self, prefix: torch.Tensor, prefix_mask: torch.Tensor) -> dict:
        """Per-layer keys/values of the prefix, computed once per chunk. prefix: (B, P, prefix_dim)."""
        p = self.prefix_proj(prefix)
        return {"kv": [blk.keys_values(p) for blk in self.blocks], "mask": prefix_mask}

    def _mask(self, prefix_mask: torch.Tensor, n_query: int, n_keys: int, causal: bool, offset: int = 0):
        b, _ = prefix_mask.shape
        pm = prefix_mask[:, None, None, :].expand(b, 1, n_query, prefix_mask.shape[1])
        if causal:
            q_pos = torch.arange(n_query, device=prefix_mask.device)[:, None] + offset
            k_pos = torch.arange(n_keys, device=prefix_mask.device)[None, :]
            am = (k_pos <= q_pos)[None, None].expand(b, 1, n_query, n_keys)
        else:
            am = torch.ones(b, 1, n_query, n_keys, dtype=torch.bool, device=prefix_mask.device)
        return torch.cat([pm, am], dim=-1)  # (B, 1, Lq, P + Lk)

    def forward(self, tokens: torch.Tensor, cache: dict, causal: bool = False) -> torch.Tensor:
        """All slots in one pass. tokens: (B, L) ids -> logits (B, L, bins)."""
        x = self.token_emb(tokens) + self.slot_embedding()[: tokens.shape[1]]
        mask = self._mask(cache["mask"], tokens.shape[1], tokens.shape[1], causal)
        for blk, kv in zip(self.blocks, cache["kv"], strict=True):
            x, _ = blk(x, kv, mask)
        return self.head(self.ln_f(x))

    def step(self, token: torch.Tensor, position: int, cache: dict, past: list[KV] | None) -> tuple:
        """One autoregressive pass for slot `position`: token (B, 1) is the previous slot's id."""
        x = self.token_emb(token) + self.slot_embedding()[position : position + 1]
        mask = self._mask(cache["mask"], 1, position + 1, causal=True, offset=position)
        new_past = []
        for i, (blk, kv) in enumerate(zip(self.blocks, cache["kv"], strict=True)):
            x, layer_kv = blk(x, kv, mask, None if past is None else past[i])
            new_past.append(layer_kv)
        return self.head(self.ln_f(x))[:, 0], new_past  # (B, bins)
