"""Texts to compare two implementations of one embedder with (GGUF vs sentence-transformers,
int8 ONNX vs fp32): deterministic, in several languages and scripts, short queries to
passages past a 512-token window."""

from __future__ import annotations

_SEEDS = (
    "How do I reset my password?",
    "The warranty covers manufacturing defects for two years from the date of purchase.",
    "退货需要在收到商品后三十天内申请，并保留原始包装。",
    "Error 0x80070005: access denied while installing the update.",
    "def add(a, b):\n    return a + b",
    "Quarterly revenue grew 12% to $4.2 billion, driven by cloud services.",
    "Les employés ont droit à vingt-cinq jours de congés payés par an.",
    "Press and hold the power button for ten seconds to force a restart.",
    "客服热线每天早上九点到晚上六点提供服务。",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
)


def parity_texts(n: int = 200) -> list[str]:
    """`n` deterministic texts of growing length (a word to past 512 tokens), in English,
    Chinese, French, code and numbers: short queries and long passages both."""
    out = []
    for i in range(n):
        repeat = 1 + (i * 7) % 40
        start = i % len(_SEEDS)
        parts = [_SEEDS[(start + j) % len(_SEEDS)] for j in range(repeat)]
        text = " ".join(parts)
        out.append(text if i % 5 else text.split()[0])
    return out
