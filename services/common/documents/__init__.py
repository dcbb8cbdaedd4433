"""Documents as ingest and the embedding tuner both read them: files found under a path,
decoded into text sections, split into chunks counted in embedder tokens.

One home for this because the tuner promises to train on passages chunked exactly as
ingest chunks them; two copies would drift.
"""
