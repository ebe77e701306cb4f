"""One adapter per upstream API shape: convert the request, send it, read the response and its
usage. Today: the OpenAI-compatible shape (Mistral, OpenAI, DeepSeek, Qwen, GLM, Gemini's
compatible endpoint, Anthropic's compatible endpoint)."""
