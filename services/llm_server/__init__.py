"""The llama.cpp LLM server as a container: provision the servable GGUF, then serve it."""
