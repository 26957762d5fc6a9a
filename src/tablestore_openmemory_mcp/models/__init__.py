"""Clients of the model services the server calls: the chat LLM, how an OpenAI-compatible endpoint fails, and
the JSON its replies carry (the embedders, beside this package, are the other model clients)."""
