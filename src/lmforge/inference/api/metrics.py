"""`/metrics`: the generation engine's state in Prometheus' text format (what vLLM's and TGI's servers expose).

    lmforge_queue_length 3                  # requests waiting for a slot
    lmforge_running_sequences 16            # requests being decoded together
    lmforge_generation_tokens_per_second 412.5
    lmforge_kv_cache_usage_ratio 0.41       # real tokens held / max_batch_tokens
"""

from __future__ import annotations

# (name, type, help, the stats key it reads)
_SERIES = [
    ("lmforge_queue_length", "gauge", "Requests waiting for a slot in the engine.", "waiting"),
    ("lmforge_running_sequences", "gauge", "Requests decoded together at the last step.", "running"),
    ("lmforge_generation_tokens_per_second", "gauge", "Tokens generated per second over the last 10 s.",
     "tokens_per_second"),
    ("lmforge_generation_tokens_total", "counter", "Tokens generated since the server started.", "generated_tokens"),
    ("lmforge_kv_cache_tokens", "gauge", "Real (non-padding) tokens held in the KV cache.", "kv_cache_tokens"),
    ("lmforge_kv_cache_slots", "gauge", "Token positions the KV cache tensors hold, left padding included.",
     "kv_cache_slots"),
    ("lmforge_kv_cache_capacity_tokens", "gauge", "max_batch_tokens: the most tokens the KV cache may hold.",
     "max_batch_tokens"),
    ("lmforge_max_num_seqs", "gauge", "max_num_seqs: the most requests decoded together.", "max_num_seqs"),
]


def prometheus_text(stats: dict) -> str:
    lines = []
    for name, kind, help_text, key in _SERIES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {_number(stats[key])}"]
    usage = stats["kv_cache_tokens"] / stats["max_batch_tokens"] if stats["max_batch_tokens"] else 0.0
    lines += ["# HELP lmforge_kv_cache_usage_ratio KV-cache tokens held over max_batch_tokens.",
              "# TYPE lmforge_kv_cache_usage_ratio gauge", f"lmforge_kv_cache_usage_ratio {_number(usage)}"]
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.6g}"
