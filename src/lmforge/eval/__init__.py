"""Evaluation: lm-evaluation-harness task files read locally (tasks/), batched log-likelihood and generation
scoring (scoring.py), their metrics (metrics.py) and `lmforge eval` (runner.py); LLaMA-Factory's eval layout (tasks/lf_layout.py, lf_eval.py); held-out
loss / perplexity / bits per byte of `lm:` sets (lm_sets.py); predict-with-generate
(predict.py) and greedy-generation accuracy (greedy.py)."""
