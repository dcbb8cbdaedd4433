"""LLM supervised fine-tuning (LoRA / QLoRA / freeze / full) with LLaMA-Factory's formats.

The service layer is `service` (train, evaluate_llm, open_chat): what the CLI and jobs call.
Modules: config (YAML keys), datasets (dataset_info.json, alpaca/sharegpt, validation),
templates (chat templates, assistant-turn segments), preprocess (tokens, loss masks,
packing), model_loading (base models, GGUF -> HF, LoRA), callbacks and plots (progress,
trainer_log.jsonl, loss PNGs), train (the run), inference, metrics, evaluate, chat.
"""
