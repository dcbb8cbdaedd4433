"""Container / process entrypoint: `python -m services.rag_api`."""

from __future__ import annotations

import logging
import sys

import uvicorn

from services.common.errors import TunestackError
from services.rag_api.app import authenticator
from services.rag_api.settings import RagSettings


def main() -> None:
    s = RagSettings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:  # refused set-ups end here with their message, not inside uvicorn's traceback
        authenticator(s)
    except TunestackError as e:
        print(f"error: {e.message}\n  hint: {e.hint}", file=sys.stderr)
        raise SystemExit(2) from None
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
