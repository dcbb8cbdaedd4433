"""Embedding tuner settings (env prefix TUNESTACK_EMBED_); how many processes tune together
comes from LLaMA-Factory's launcher variables (NPROC_PER_NODE, NNODES, ...), as for
`llm train`."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from services.common.settings import CommonSettings, DataParallelSettings


class EmbedSettings(CommonSettings, DataParallelSettings):
    model_config = SettingsConfigDict(
        env_prefix="TUNESTACK_EMBED_", env_file=".env", extra="ignore", populate_by_name=True
    )

    chunk_size: int = 256
    chunk_overlap: int = 32
    # Offline pseudo-queries: every sentence of a chunk ("sentences"; "mixed" adds clauses
    # and cloze questions). bench/embed_tune_protocol.py's validations (held-out articles
    # or sentences, cloze pseudo-questions) preferred mixed, 4 per chunk, 1 epoch; on human
    # questions that scored lower on both sets and barely moved a 60-paragraph corpus, so
    # these stay (bench/README.md).
    pseudo: str = "sentences"
    per_chunk: int = 0  # offline: 0 = every pseudo-query candidate; LLM default is 3
    llm_per_chunk: int = 3
    val_fraction: float = 0.1
    # two passes: on XQuAD-en (1,092 pairs, 35 steps an epoch) the second epoch took the
    # error reduction from 17.7% to 24.6%; validation picks the best checkpoint anyway
    epochs: float = 2.0
    batch_size: int = 32
    # sentence-transformers' usual 2e-5 barely moves a model in the ~35 steps a small
    # corpus gives (XQuAD-en, 240 paragraphs: error reduction 15.1% at 2e-5, 17.7% at 5e-5).
    lr: float = 5e-5
    max_seq_length: int = 256
    top_k: int = 10
