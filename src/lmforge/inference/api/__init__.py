"""The OpenAI-compatible HTTP server behind `lmforge api`: `protocol` (request and response shapes), `app`
(the FastAPI routes), `scheduler` (one generation at a time, in arrival order) and `server` (the command)."""
