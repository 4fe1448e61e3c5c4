"""User-facing tools over the pipeline and the planner: `lmforge data validate|stats|preview`, `lmforge estimate`.

They sit above data/, model/, train/ and planner/ (which hold no command-line code), so the pipeline stays the
pipeline and a tool may use any of them.
"""
