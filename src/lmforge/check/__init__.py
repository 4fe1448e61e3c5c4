"""`lmforge check`: probes that measure a fine-tuned model against thresholds (probe.py, probes/), the context
they share (context.py), the runner (runner.py) and the reports (report.py)."""
