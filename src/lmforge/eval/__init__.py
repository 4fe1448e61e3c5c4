"""Evaluation: lm-evaluation-harness task files read locally (tasks/), batched log-likelihood and generation
scoring (scoring.py), their metrics (metrics.py) and `lmforge eval` (runner.py); predict-with-generate
(predict.py) and greedy-generation accuracy (greedy.py)."""
