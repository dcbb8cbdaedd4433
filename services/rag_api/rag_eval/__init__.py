"""RAG evaluation: every (LLM, embedder, retrieval mode) over a QA set, through the one
answer path (services.rag_api.answering), scored for retrieval, answer, citations,
faithfulness, abstention and speed, written as a report folder.

- datasets: SQuAD v1.1 / CMRC 2018 JSON, EmbeddingQAFinetuneDataset JSON + `answers`, JSONL
- metrics: SQuAD EM/F1, CMRC 2018 F1/EM, ROUGE-L, citations, faithfulness, abstention
- gold: which chunks of the collection hold each question's passage and answer
- llms: model names looked up on the configured LLM servers (never a URL from a request)
- runner: the evaluation loop, per-question JSONL written as it goes (resumable)
- report: report.json, report.md, f1_heatmap.png, questions.jsonl

The CLI (`tunestack rag eval`), the API job (POST /v1/jobs/rag-eval) and the UI's
Evaluate page (RAG tab) are adapters over runner.run_rag_eval.
"""
