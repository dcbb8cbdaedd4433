from __future__ import annotations

from services.rag_api.bm25 import Bm25Index, rrf, tokenize
from services.rag_api.prompts import citation_suffix, cited_numbers
from services.rag_api.retrieval import Hit


def test_tokenize_mixed_text() -> None:
    toks = tokenize("The Warranty lasts 3 years. 保修期为三年。")
    assert "warranty" in toks and "3" in toks and "the" not in toks
    assert "保修期" in toks or "保修" in toks


def test_bm25_prefers_matching_chunk_in_chinese() -> None:
    docs = [
        "深圳分销商负责华南地区的销售。",
        "保修期为三年，电池保修一年。",
        "支持时间是工作日九点到五点。",
    ]
    idx = Bm25Index.build(["a", "b", "c"], [tokenize(d) for d in docs])
    assert idx.search("保修期多久？", 3)[0][0] == "b"
    assert idx.search("zzzz", 3) == []


def test_rrf_fuses_rankings() -> None:
    fused = rrf([["a", "b", "c"], ["b", "c", "a"]])
    assert next(i for i, _ in fused) == "b"
    assert len(fused) == 3


def _hit(text: str) -> Hit:
    return Hit(id=text[:5], text=text, source="s", file_name="f.md", chunk_index=0, score=1.0)


def test_citation_suffix() -> None:
    hits = [_hit("The LO-200 Path Light costs 49 EUR."), _hit("Support hours are 9 to 5.")]
    assert citation_suffix("It costs 49 EUR for the LO-200 path light.", hits) == " [1]"
    assert citation_suffix("It costs 49 EUR [1].", hits) == ""
    assert citation_suffix("I do not know anything about bananas.", hits) == ""
    assert cited_numbers("see [2] and [7]", 2) == [2]
