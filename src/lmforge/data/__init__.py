"""Data: dataset files -> conversations -> tokenized examples (see the modules for each step)."""
