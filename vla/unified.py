"""Unified decoder: the action slots are extra positions of the VLM's own language model.

The paper's architecture (docs/method.md sections 2-3): one sequence
    [images, instruction] [state] [L = H x D action slots]
through the language model's own layers. The prefix (images and instruction) runs in the VLM's
native attention and position scheme; the state token and the slots follow it at the next
positions of that scheme (1-indexed for PaliGemma, multimodal rotary positions for Qwen2.5-VL:
`VLMBackbone.prefix_cache` reads them from the VLM's own call). Slots see the whole prefix and
each other (bidirectionally for masked diffusion, causally for the autoregressive baseline);
the prefix never sees the slots.

The prefix's keys and values live in the language model's own cache type, wrapped by
`FrozenPrefixCache`: every refinement step reads them and none writes them, so they are computed
once per chunk. The autoregressive baseline forks the cache (`fork()`), which then keeps the
decoded slots' keys and values on top of the shared prefix.

Token ids, as in the action-expert decoder: 0..bins-1 are bins, `bins` is [MASK], `bins + 1`
[BOS]. They index a dedicated table in the language model's width; the text vocabulary is
untouched.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache, CacheLayerMixin


class FrozenPrefixLayer(CacheLayerMixin):
    """One layer's prefix keys/values (B, kv_heads, P, head_dim). `update` returns them with the
    new positions appended and stores nothing unless `keep` (the autoregressive fork)."""

    is_sliding = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, keep: bool = False) -> None:
        super().__init__()
        self.keys, self.values = keys, values
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.keep = keep

    def lazy_initialization(self, key_states, value_states) -> None:  # always initialised
        pass

    def update(self, key_states, value_states, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        keys = torch.cat([self.keys, key_states], dim=-2)
        values = torch.cat([self.values, value_states], dim=-2)
        if self.keep:  # rebinds this fork's tensors; the prefix tensors themselves never change
            self.keys, self.values = keys, values
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_seq_length(self) -> int:
        return self.keys.shape[-2]

    def get_max_cache_shape(self) -> int:
        return -1


class FrozenPrefixCache(Cache):
    """The language model's cache over a fixed prefix (see `FrozenPrefixLayer`)."""

    def __init__(self, layers: list[FrozenPrefixLayer]) -> None:
        super().__init__(layers=layers)

    @classmethod
    def from_cache(cls, cache: Cache) -> FrozenPrefixCache:
        """Wrap a filled cache (the VLM's DynamicCache after the prefix) without copying it."""
        layers = []
        for i, layer in enumerate(cache.layers):
            if getattr(layer, "is_sliding", False):
                raise NotImplementedError(
                    f"decoder_arch=unified: layer {i} of this language model uses sliding-window attention, "
                    "whose cache cannot hold a fixed prefix here; use decoder_arch=expert"
                )
            layers.append(FrozenPrefixLayer(layer.keys, layer.values))
        return cls(layers)

    def fork(self) -> FrozenPrefixCache:
        """A cache that keeps what is appended (autoregressive decoding); this one is unchanged."""
        return FrozenPrefixCache([FrozenPrefixLayer(la.keys, la.values, keep=True) for la in self.layers])


class UnifiedDecoder(nn.Module):
    """Action embeddings and the bins head of the unified decoder; the layers are the VLM's.

    `forward(tokens, cache)` and `step(...)` mirror `vla.decoder.ActionDecoder`, so the model and
    the samplers use either decoder the same way; the cache (from `VLAModel.chunk_cache`) carries
    the language model to run.
    """

    def __init__(
        self, hidden: int, chunk_size: int, action_dim: int, bins: int, cond_dim: int, embed_std: float
    ) -> None:
        super().__init__()
        self.bins = bins
        self.mask_id = bins
        self.bos_id = bins + 1
        self.chunk_size = chunk_size
        self.action_dim = action_dim
        # The slots enter at the scale of the language model's own token embeddings.
        self.token_emb = nn.Embedding(bins + 2, hidden)  # bins + [MASK] + [BOS], all trainable
        nn.init.normal_(self.token_emb.weight, std=embed_std)
        self.step_emb = nn.Parameter(torch.randn(chunk_size, 1, hidden) * 0.02 * embed_std)
        self.dim_emb = nn.Parameter(torch.randn(1, action_dim, hidden) * 0.02 * embed_std)
        # As in the action expert: the pooled instruction and the state token also reach every
        # slot directly, not only through attention to a few positions among hundreds.
        self.cond_proj = nn.Linear(cond_dim, hidden)
        self.head = nn.Linear(hidden, bins)

    @property
    def num_slots(self) -> int:
        return self.chunk_size * self.action_dim

    def slot_embedding(self) -> torch.Tensor:
        return (self.step_emb + self.dim_emb).reshape(self.num_slots, -1)  # (L, hidden), slot = h * D + d

    def _run(self, tokens: torch.Tensor, cache: dict, start: int, kv: Cache, causal: bool) -> torch.Tensor:
        """Slots start..start+n-1 through the language model over `kv`; -> logits (B, n, bins)."""
        n = tokens.shape[1]
        x = self.token_emb(tokens) + self.slot_embedding()[start : start + n] + cache["cond"]
        lm = cache["lm"]
        x = x.to(cache["dtype"])
        out = lm(
            inputs_embeds=x,
            attention_mask=slot_mask(cache["mask"], kv.get_seq_length(), n, causal, x.dtype),
            position_ids=slot_positions(cache["next_position"], start, n),
            past_key_values=kv,
            use_cache=True,
        )
        return self.head(out.last_hidden_state.to(self.head.weight.dtype))

    def forward(self, tokens: torch.Tensor, cache: dict, causal: bool = False) -> torch.Tensor:
        """All slots in one pass. tokens: (B, L) ids -> logits (B, L, bins)."""
        return self._run(tokens, cache, 0, cache["kv"], causal)

    def step(self, token: torch.Tensor, position: int, cache: dict, past: FrozenPrefixCache | None) -> tuple:
        """One autoregressive pass for slot `position`: token (B, 1) is the previous slot's id."""
        past = cache["kv"].fork() if past is None else past
        return self._run(token, cache, position, past, causal=False)[:, 0], past  # (B, bins)


def slot_mask(prefix_mask: torch.Tensor, n_cached: int, n_query: int, causal: bool, dtype) -> torch.Tensor:
    """Additive (B, 1, n_query, n_cached + n_query) mask: 0 where a query may attend, else the
    dtype's minimum (what eager attention adds and SDPA accepts). Keys are [cached ; queries];
    of the cached ones, `prefix_mask` (B, P) marks the prefix's real positions and any beyond P
    (the state token, already decoded slots) are always visible."""
    b, p = prefix_mask.shape
    device = prefix_mask.device
    cached = torch.ones(b, n_cached, dtype=torch.bool, device=device)
    cached[:, :p] = prefix_mask
    allowed = cached[:, None, :].expand(b, n_query, n_cached)
    if causal:
        own = torch.ones(n_query, n_query, dtype=torch.bool, device=device).tril()
    else:
        own = torch.ones(n_query, n_query, dtype=torch.bool, device=device)
    allowed = torch.cat([allowed, own[None].expand(b, n_query, n_query)], dim=-1)[:, None]
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def slot_positions(next_position: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """Positions of `n` tokens at offsets start.. after the prefix. next_position: (B,) or (A, B)
    for multi-axis rotary positions (all axes advance together after the prefix, as for text)."""
    offsets = torch.arange(start, start + n, device=next_position.device)
    return next_position[..., None] + offsets
