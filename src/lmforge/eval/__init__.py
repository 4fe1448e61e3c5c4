"""Evaluation: greedy-generation accuracy (more metrics arrive with predict)."""
