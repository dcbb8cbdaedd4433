"""The RAG chain: numbered context -> LangChain prompt -> OpenAI-compatible chat model.

The instruction text and the passage layout are services/common/rag_prompt.py's, shared
with the trainer so that preference data built from evaluation failures (`tunestack llm
prefs`) trains on exactly the prompt served here.

Small local models often ignore the instruction to cite. Rather than return an answer
without provenance, `citation_suffix` appends the numbers of the passages the answer's
words come from (token overlap above a threshold); markers the model wrote itself are
kept as they are, and nothing is appended to an answer that overlaps no passage.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from services.common.rag_prompt import SYSTEM, format_context
from services.rag_api.bm25 import tokenize
from services.rag_api.retrieval import Hit

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", SYSTEM),
        MessagesPlaceholder("history", optional=True),
        ("human", "{question}"),
    ]
)
_MARKER = re.compile(r"\[(\d{1,2})\]")


def history_messages(messages: list[dict[str, Any]]) -> list[BaseMessage]:
    """Earlier turns of an OpenAI messages list, for follow-up questions."""
    out: list[BaseMessage] = []
    for m in messages[:-1][-6:]:
        content = m.get("content") or ""
        if not isinstance(content, str):
            continue
        if m.get("role") == "user":
            out.append(HumanMessage(content))
        elif m.get("role") == "assistant":
            out.append(AIMessage(content))
    return out


def prompt_input(question: str, hits: list[Hit], history: list[BaseMessage]) -> dict[str, Any]:
    return {"context": format_context(hits), "question": question, "history": history}


async def answer(llm: Any, inputs: dict[str, Any]) -> tuple[str, dict[str, int]]:
    msg = await (PROMPT | llm).ainvoke(inputs)
    usage = getattr(msg, "usage_metadata", None) or {}
    return str(msg.content), usage_of(usage)


async def stream(llm: Any, inputs: dict[str, Any]) -> AsyncIterator[AIMessageChunk]:
    async for chunk in (PROMPT | llm).astream(inputs):
        yield chunk


def usage_of(u: Any) -> dict[str, int]:
    return {
        "prompt_tokens": int(u.get("input_tokens", 0)),
        "completion_tokens": int(u.get("output_tokens", 0)),
        "total_tokens": int(u.get("total_tokens", 0)),
    }


def cited_numbers(answer_text: str, n_sources: int) -> list[int]:
    return sorted({int(m) for m in _MARKER.findall(answer_text) if 1 <= int(m) <= n_sources})


def citation_suffix(answer_text: str, hits: list[Hit], min_overlap: float = 0.25) -> str:
    """Markers to append when the model cited nothing: the passages the answer came from.

    Greedy cover of the answer's words: the passage sharing most of them is cited, then
    another only if it adds words the cited ones lack (>= 20% of the answer), so a short
    answer found in one passage cites that one rather than every passage on the topic.
    Returned as a suffix (" [1][3]") so streaming and non-streaming answers get the same
    treatment: the suffix is sent as the last content delta of a stream.
    """
    if not hits or not answer_text.strip() or cited_numbers(answer_text, len(hits)):
        return ""
    answer = set(tokenize(answer_text))
    if not answer:
        return ""
    passages = [set(tokenize(h.text)) & answer for h in hits]
    covered: set[str] = set()
    cited: list[int] = []
    while True:
        gains = [len(p - covered) for p in passages]
        best = max(range(len(hits)), key=lambda i: (gains[i], -i))
        need = min_overlap if not cited else 0.2
        if best in cited or gains[best] / len(answer) < need:
            break
        cited.append(best)
        covered |= passages[best]
    return (" " + "".join(f"[{i + 1}]" for i in sorted(cited))) if cited else ""
