"""Sentence-aware chunking for English and Chinese.

LlamaIndex's SentenceSplitter does the packing (chunk size and overlap counted in the
embedder's own tokens, so a chunk never silently overflows the model's window); we give
it a sentence splitter that knows CJK sentence ends (。！？；… with closing quotes),
because its default (NLTK punkt) treats a whole Chinese paragraph as one sentence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# A sentence ends at ASCII .!? followed by whitespace, or at CJK enders (no space needed),
# in both cases swallowing closing quotes/brackets that belong to the sentence.
_CLOSERS = "\"'”’」』）)】》"
_SENTENCE_END = re.compile(rf"(?<=[.!?])[{_CLOSERS}]*\s+|(?<=[。！？；…])[{_CLOSERS}]*|\n+")
# Used when one sentence is longer than a chunk: split at clause punctuation.
_CLAUSE_REGEX = r"[^,.;:，、。；：？！?!]+[,.;:，、。；：？！?!]?|[,.;:，、。；：？！?!]"


def split_sentences(text: str) -> list[str]:
    """Split keeping each sentence's trailing punctuation and whitespace (lossless)."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if end > start:
            out.append(text[start:end])
            start = end
    if start < len(text):
        out.append(text[start:])
    return [s for s in out if s]


@dataclass(frozen=True)
class Chunker:
    """One configured splitter, built when the Chunker is: LlamaIndex's import (~1 s) and
    the splitter's set-up are paid once, not on the first file or on every section."""

    chunk_size: int
    chunk_overlap: int
    token_count: Callable[[str], list[int]]
    _splitter: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.chunk_size < 16:
            raise ValueError("chunk_size must be at least 16 tokens")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ValueError("chunk_overlap must be >= 0 and smaller than chunk_size")
        from llama_index.core.node_parser import SentenceSplitter  # heavy: ~1 s to import

        splitter = SentenceSplitter(
            chunk_size=self.chunk_size,
            chunk_overlap=self.chunk_overlap,
            tokenizer=self.token_count,
            paragraph_separator="\n\n",
            chunking_tokenizer_fn=split_sentences,
            secondary_chunking_regex=_CLAUSE_REGEX,
        )
        object.__setattr__(self, "_splitter", splitter)  # frozen: set once, here

    def split(self, text: str) -> list[str]:
        return [c.strip() for c in self._splitter.split_text(text) if c.strip()]
