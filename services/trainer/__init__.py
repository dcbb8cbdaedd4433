"""LLM fine-tuning (LoRA / QLoRA / freeze / full), supervised or from preferences (DPO,
ORPO, SimPO, KTO), with LLaMA-Factory's formats.

The service layer is `service` (train, evaluate_llm, open_chat, prefs_from_eval): what the
CLI and jobs call. Modules: config (YAML keys), datasets (dataset_info.json,
alpaca/sharegpt/preference records, validation), templates (chat templates,
assistant-turn segments), preprocess (tokens, loss masks, packing), pref_data (pairs and
KTO answers), pref_loss (the preference losses), pref_trainer (the dpo/kto Trainer),
prefs_from_eval (preference data from RAG evaluation failures), model_loading (base
models, GGUF -> HF, LoRA, reference models), callbacks and plots (progress,
trainer_log.jsonl, loss/reward PNGs), train (the run), inference, metrics, evaluate, chat.
"""
