"""Standalone models from trained runs: LoRA adapters merged into their base."""
