"""Grouped-query attention that never copies the KV cache.

transformers' CPU SDPA path repeats every K/V head for its query heads (`repeat_kv`) before
attention whenever there is a mask, i.e. for any multi-token prefill on top of a cache: for
SmolLM2 (9 query heads on 3 KV heads) at 2048 cached tokens that is 140 MB copied per forward,
a quarter of the suffix prefill that follows a KV cube injection. Here the query heads that
share a KV head are stacked as extra query rows instead (what transformers already does for a
single query token, `pack_gqa`), with the mask repeated to match: the same dot products and
softmax per row, no cache copy. Anything outside that simple case goes to transformers' own
SDPA function unchanged.
"""

from __future__ import annotations

from transformers.integrations.sdpa_attention import sdpa_attention_forward as _sdpa
from transformers.masking_utils import sdpa_mask

from memnet.model.runtime import torch, transformers

NAME = "memnet_gqa"


def grouped_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                      scaling: float | None = None, **kwargs):
    batch, heads, q_len, _ = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    rep = heads // kv_heads
    causal = kwargs.get("is_causal", getattr(module, "is_causal", True))
    plain = (rep > 1 and heads == rep * kv_heads and dropout == 0.0 and causal
             and kwargs.get("softcap") is None and kwargs.get("position_bias") is None
             and kwargs.get("cache") is None and not kwargs.get("output_attentions", False))
    if plain and attention_mask is None and (q_len == 1 or q_len == kv_len):
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, scale=scaling, is_causal=q_len > 1, enable_gqa=True)
        return out.transpose(1, 2).contiguous(), None
    if not (plain and attention_mask is not None and attention_mask.dim() == 4
            and attention_mask.shape[1] == 1 and attention_mask.shape[2] == q_len
            and attention_mask.shape[3] == kv_len):
        return _sdpa(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    # rows of query head kv*rep + r become rows r*q_len .. r*q_len + q_len - 1 of KV head kv
    grouped = query.reshape(batch, kv_heads, rep * q_len, query.shape[-1])
    mask_batch = attention_mask.shape[0]
    mask = attention_mask.unsqueeze(2).expand(mask_batch, 1, rep, q_len, kv_len)
    mask = mask.reshape(mask_batch, 1, rep * q_len, kv_len)
    out = torch.nn.functional.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, scale=scaling)
    return out.reshape(batch, heads, q_len, value.shape[-1]).transpose(1, 2).contiguous(), None


transformers.AttentionInterface.register(NAME, grouped_attention)
transformers.AttentionMaskInterface.register(NAME, sdpa_mask)
