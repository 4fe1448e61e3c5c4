#!/usr/bin/env bash
# Side-by-side SFT benchmark vs LLaMA-Factory 0.9.5 (installs it in benchmarks/.venv-llamafactory on first use).
cd "$(dirname "$0")/.." && exec .venv/bin/python benchmarks/sft_vs_llamafactory.py "$@"
