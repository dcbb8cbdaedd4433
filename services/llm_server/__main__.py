"""Container entrypoint: `python -m services.llm_server`.

Local mode prepares the model in the CLI before it starts the server; a container has no
CLI in front of it, so it does the same here on start: register the model from the
registry (TUNESTACK_HOME, a volume shared with the other services), pick the file that
decodes correctly (the bundled Q4_1 base becomes F16 once, see
services/converter/servable.py), then replace this process with the server so signals
and the exit code belong to it.
"""

from __future__ import annotations

import logging
import os

from services.common.errors import TunestackError
from services.common.registry import Registry
from services.converter.servable import servable_gguf
from services.llm_server.command import server_argv
from services.llm_server.settings import LlmServerSettings

log = logging.getLogger("tunestack.llm_server")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = LlmServerSettings()
    try:
        registry = Registry(s.home_dir)
        registry.ensure("llm", s.default_llm)
        entry, gguf = servable_gguf(registry, s.default_llm)
        argv = server_argv(s, gguf)  # engine llama-server: refused when not built
    except TunestackError as e:
        log.error("%s", e)
        raise SystemExit(1) from e
    log.info("serving %s from %s on %s:%s (%s)", entry.name, gguf, s.host, s.port, s.serving_engine)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
