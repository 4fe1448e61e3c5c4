"""Models and tokenizers: loading, adapters, and new tiny models for tests and demos."""
