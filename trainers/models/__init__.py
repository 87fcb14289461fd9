"""Models and the policies on them: the one factory (backends), offline models and GGUF files
(local, `gymwire model`), and the transformers, OpenAI-compatible and vLLM policy backends."""
