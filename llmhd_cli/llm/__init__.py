"""The LLM layer: providers, prompt templates, the cache/ledger and the calling client."""
