"""Streamlit UI. Talks to the RAG API over HTTP only, so it needs no torch or Chroma."""
