"""Bytes of a generation KV cache (rollouts of the online-RL stages, the inference engine): arithmetic only.

    kv_cache_bytes(layers=28, kv_heads=2, head_dim=128, tokens=1280, sequences=8, bytes_per_element=2)

Each layer keeps one K and one V vector of `kv_heads x head_dim` elements per cached token (GQA/MQA: the
key-value heads, not the query heads), for every sequence generated at once.
"""

from __future__ import annotations


def kv_cache_bytes(*, layers: int, kv_heads: int, head_dim: int, tokens: int, sequences: int,
                   bytes_per_element: int) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x tokens x sequences x bytes per element."""
    return 2 * layers * kv_heads * head_dim * tokens * sequences * bytes_per_element
