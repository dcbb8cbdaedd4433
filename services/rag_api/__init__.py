"""RAG API: ingest, retrieve, OpenAI-compatible chat/models/embeddings, health."""
