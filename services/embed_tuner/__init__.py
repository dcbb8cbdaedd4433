"""Embedding tuner: synthesize queries from documents, fine-tune, evaluate, report."""
