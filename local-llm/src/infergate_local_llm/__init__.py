"""An Ollama-compatible HTTP server over llama-cpp-python serving SmolLM2-135M-Instruct.

The embedded default LLM for local development and CI, where no real Ollama is reachable.
"""
