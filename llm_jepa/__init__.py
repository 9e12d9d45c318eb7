"""LLM-JEPA: an embedding-prediction loss for Hugging Face causal-LM finetuning."""
