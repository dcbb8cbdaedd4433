"""Converter: GGUF quantization, servable files for llama.cpp, (later) merge/export/deploy."""
