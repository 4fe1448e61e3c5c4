#!/usr/bin/env bash
# The GPU check of issue 26 in one command (benchmarks/gpu_speed.py says what it runs; < 10 minutes on one
# H100 / H200). Run from anywhere; the results file is written where --out says.
#
#   benchmarks/gpu_check.sh --out gpu_speed.json [--only sft_packed_varlen_attn,engine_throughput]
#   benchmarks/gpu_check.sh --dry-run --out plan.json     # builds and validates every command, runs none
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [[ " $* " != *" --dry-run "* ]] && ! python3 -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check.sh: no CUDA device here; use --dry-run to check the commands" >&2
    exit 2
fi
exec python3 "$repo/benchmarks/gpu_speed.py" "$@"
