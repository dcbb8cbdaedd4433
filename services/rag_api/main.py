"""ASGI app object for uvicorn (`uvicorn services.rag_api.main:app`)."""

from services.rag_api.app import create_app

app = create_app()
