"""Train the Word2Vec skip-gram baseline on a corpus and register it as an embedder
(`tunestack embed word2vec`).

Defaults were picked on the CMRC 2018 trial set (its paragraphs, scored on its questions),
never on the XQuAD sets the README reports: 200 dimensions, window 10, min_count 2, and
as many epochs as fit a budget of 10M words processed, at most 100 (a few hundred
paragraphs need many passes; a large corpus gets gensim's usual 5). One worker thread and
a fixed seed and an unsalted word hash make a run reproducible.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from services.common.embedders.word2vec_local import VECTORS_FILE, words
from services.common.errors import BadInput, disk_full_names
from services.common.records import EmbedderRecord
from services.common.registry import Entry, Registry, validate_name, versions

WORD_BUDGET = 10_000_000


@dataclass
class Word2VecParams:
    dimension: int = 200
    window: int = 10
    min_count: int = 2
    epochs: int | None = None  # None: from WORD_BUDGET, 5..100
    seed: int = 0

    def epochs_for(self, n_words: int) -> int:
        if self.epochs is not None:
            return self.epochs
        return max(5, min(100, WORD_BUDGET // max(1, n_words)))


@dataclass
class Word2VecRequest:
    name: str
    passages: dict[str, str]
    source: str
    params: Word2VecParams = field(default_factory=Word2VecParams)
    overwrite: bool = False


def _stable_hash(word: str) -> int:
    """gensim seeds each word's initial vector with hash(word), which Python salts per
    process: the same corpus and seed would train different vectors in every run."""
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")


def train_word2vec(registry: Registry, req: Word2VecRequest) -> Entry[EmbedderRecord]:
    from gensim.models import Word2Vec  # optional extra (embed)

    validate_name(req.name)
    p = req.params
    if (
        p.dimension < 8
        or p.window < 1
        or p.min_count < 1
        or (p.epochs is not None and p.epochs < 1)
    ):
        raise BadInput("--dim must be >= 8 and --window, --min-count, --epochs >= 1.")
    dest = registry.entry_dir("embedder", req.name)
    if (dest / "meta.json").exists() and not req.overwrite:
        raise BadInput(
            f"embedder '{req.name}' already exists.", hint="Pick another --name or --overwrite."
        )
    sentences = [w for w in (words(t) for t in req.passages.values()) if w]
    n_words = sum(map(len, sentences))
    if n_words < 50:
        raise BadInput(
            f"The corpus has {n_words} words: too few to learn word vectors from.",
            hint="Give a folder of documents (--docs) or a larger --corpus.",
        )
    epochs = p.epochs_for(n_words)
    t0 = time.perf_counter()
    model = Word2Vec(
        sentences,
        vector_size=p.dimension,
        window=p.window,
        min_count=p.min_count,
        sg=1,
        epochs=epochs,
        workers=1,
        seed=p.seed,
        hashfxn=_stable_hash,
    )
    seconds = time.perf_counter() - t0
    if not len(model.wv):
        raise BadInput(
            f"No word occurs {p.min_count} times: the vocabulary is empty.",
            hint="Lower --min-count or give more text.",
        )
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob(VECTORS_FILE + "*"):
        old.unlink()
    with disk_full_names(dest, registry.home):
        model.wv.save(str(dest / VECTORS_FILE))
    # the words and their vectors (the saved file also holds a timestamp)
    fp = hashlib.sha256("\n".join(model.wv.index_to_key).encode())
    fp.update(model.wv.vectors.astype("<f4").tobytes())
    params: dict[str, Any] = {
        "dimension": p.dimension,
        "window": p.window,
        "min_count": p.min_count,
        "epochs": epochs,
        "seed": p.seed,
        "sg": 1,
    }
    record = EmbedderRecord(
        name=req.name,
        model_path=str(dest / VECTORS_FILE),
        source="word2vec",
        fingerprint=fp.hexdigest()[:16],
        provider="word2vec",
        dimension=p.dimension,
        parameters=params,
        data={
            "source": req.source,
            "passages": len(req.passages),
            "words": n_words,
            "vocabulary": len(model.wv),
            "train_seconds": round(seconds, 2),
        },
        versions=versions(),
    )
    return registry.write(record, replace=True)


__all__ = ["Word2VecParams", "Word2VecRequest", "train_word2vec"]
