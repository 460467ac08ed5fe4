"""llmhd: LLM-enhanced hard-sample denoising for implicit-feedback recommenders."""

__version__ = "0.1.0"
