"""Container / process entrypoint: `python -m services.rag_api`."""

from __future__ import annotations

import logging

import uvicorn

from services.rag_api.settings import RagSettings


def main() -> None:
    s = RagSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(
        "services.rag_api.main:app",
        host=s.host,
        port=s.port,
        workers=s.workers,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
