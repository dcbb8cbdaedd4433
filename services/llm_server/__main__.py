"""Container entrypoint: `python -m services.llm_server`.

Local mode prepares the model in the CLI before it starts `python -m llama_cpp.server`;
a container has no CLI in front of it, so it does the same here on start: register the
model from the registry (TUNESTACK_HOME, a volume shared with the other services), pick
the file that decodes correctly (the bundled Q4_1 base becomes F16 once, see
services/converter/servable.py), then replace this process with the server so signals
and the exit code belong to it.
"""

from __future__ import annotations

import logging
import os
import sys

from services.common.errors import TunestackError
from services.common.registry import Registry
from services.converter.servable import servable_gguf
from services.llm_server.settings import LlmServerSettings

log = logging.getLogger("tunestack.llm_server")


def server_argv(s: LlmServerSettings, model_path: str) -> list[str]:
    """The llama-cpp-python server command line, the same flags local mode uses."""
    return [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        model_path,
        "--model_alias",
        s.default_llm,
        "--host",
        s.host,
        "--port",
        str(s.port),
        "--n_ctx",
        str(s.ctx),
        "--n_threads",
        str(s.threads or os.cpu_count() or 1),
        "--n_gpu_layers",
        str(s.gpu_layers),
    ]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    s = LlmServerSettings()
    try:
        entry, gguf = servable_gguf(Registry(s.home_dir), s.default_llm)
    except TunestackError as e:
        log.error("%s", e)
        raise SystemExit(1) from e
    log.info("serving %s from %s on %s:%s", entry.name, gguf, s.host, s.port)
    argv = server_argv(s, str(gguf))
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main()
