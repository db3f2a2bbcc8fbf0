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
        """x: (B, La, d) action slots; mask: bool, broadcastable to (B, 1, La, P + S), or None."""
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
    def __init__(
        self, cfg: DecoderConfig, prefix_dim: int, chunk_size: int, action_dim: int, bins: int, cond_dim: int = 0
    ) -> None:
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
        # Optional global conditioning added to every slot's input (the policy passes its pooled
        # instruction token and its state token): attention to a few needles among hundreds of
        # prefix tokens is slow to learn, a direct path is not.
        self.cond_proj = nn.Linear(cond_dim, cfg.d_model) if cond_dim else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, bins)

    @property
    def num_slots(self) -> int:
        return self.chunk_size * self.action_dim

    def slot_embedding(self) -> torch.Tensor:
        return (self.step_emb + self.dim_emb).reshape(self.num_slots, -1)  # (L, d), slot = h * D + d

    def prefix_cache(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, cond: torch.Tensor | None = None) -> dict:
        """Per-layer keys/values of the prefix (and the slot conditioning), computed once per chunk.

        prefix: (B, P, prefix_dim); prefix_mask: (B, P) bool; cond: (B, cond_dim) when cond_dim > 0.
        """
        p = self.prefix_proj(prefix)
        cache = {"kv": [blk.keys_values(p) for blk in self.blocks], "mask": prefix_mask, "cond": None}
        if self.cond_proj is not None:
            if cond is None or cond.shape != (prefix.shape[0], self.cond_proj.in_features):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(
                    f"decoder needs cond of shape ({prefix.shape[0]}, {self.cond_proj.in_features}), got {got}"
                )
            cache["cond"] = self.cond_proj(cond.to(p.dtype))[:, None]  # (B, 1, d)
        # Every chunk's cache has the same keys from the start (the refinement steps' mask too),
        # so a compiled decoder pass (`VLAModel.compile_decoder`) is not re-traced per chunk.
        self._mask(cache, self.num_slots, self.num_slots, causal=False)
        return cache

    def _embed(self, tokens: torch.Tensor, cache: dict, start: int) -> torch.Tensor:
        x = self.token_emb(tokens) + self.slot_embedding()[start : start + tokens.shape[1]]
        return x if cache["cond"] is None else x + cache["cond"]

    def _mask(self, cache: dict, n_query: int, n_keys: int, causal: bool) -> torch.Tensor | None:
        """Attention mask over [prefix ; n_keys slots], True = may attend; None when nothing is masked.

        Non-causal masks are (B, 1, 1, P + n_keys), broadcast over queries, and kept in the cache
        so the refinement steps of one chunk build them once.
        """
        pm = cache["mask"]
        if not causal:
            key = ("mask", n_keys)
            if key not in cache:
                ones = torch.ones(pm.shape[0], n_keys, dtype=torch.bool, device=pm.device)
                cache[key] = None if bool(pm.all()) else torch.cat([pm, ones], dim=1)[:, None, None, :]
            return cache[key]
        b = pm.shape[0]
        q_pos = torch.arange(n_query, device=pm.device)[:, None]
        k_pos = torch.arange(n_keys, device=pm.device)[None, :]
        am = (k_pos <= q_pos)[None, None].expand(b, 1, n_query, n_keys)
        return torch.cat([pm[:, None, None, :].expand(b, 1, n_query, pm.shape[1]), am], dim=-1)

    def forward(self, tokens: torch.Tensor, cache: dict, causal: bool = False) -> torch.Tensor:
        """All slots in one pass. tokens: (B, L) ids -> logits (B, L, bins)."""
        x = self._embed(tokens, cache, 0)
        mask = self._mask(cache, tokens.shape[1], tokens.shape[1], causal)
        for blk, kv in zip(self.blocks, cache["kv"], strict=True):
            x, _ = blk(x, kv, mask)
        return self.head(self.ln_f(x))

    def step(self, token: torch.Tensor, position: int, cache: dict, past: list[KV] | None) -> tuple:
        """One autoregressive pass for slot `position`: token (B, 1) is the previous slot's id."""
        x = self._embed(token, cache, position)
        # One query at the newest position sees every cached slot: only the prefix can be masked.
        mask = self._mask(cache, 1, position + 1, causal=False)
        new_past = []
        for i, (blk, kv) in enumerate(zip(self.blocks, cache["kv"], strict=True)):
            x, layer_kv = blk(x, kv, mask, None if past is None else past[i])
            new_past.append(layer_kv)
        return self.head(self.ln_f(x))[:, 0], new_past  # (B, bins)
