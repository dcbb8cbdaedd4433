"""RAG fine-tuning data (`tunestack llm synth`), in the spirit of RAFT (Zhang et al., 2024).

Each example is what the RAG chain sends at serving time, the shared prompt of
services/common/rag_prompt.py with k retrieved passages (the gold one at a random
position among hard distractors, or distractors only), followed by the answer the
model should give: the answer with its passage's citation [n], or the abstention
sentence `rag eval` counts as "not in the documents".

- passages: the corpus, chunked as ingest chunks it (file name, page), or a corpus file
- teacher: questions and answers per chunk from an OpenAI-compatible LLM, resumable
- examples: the gold chunks of a QA set, BM25 distractors, the examples, the dataset files
- service: the one entry point (`synthesize`) the CLI adapts

It lives in rag_api because it is built from rag_api's parts: BM25 retrieval, the QA set
loaders and gold matching of `rag eval`, ingest's read caps.
"""
