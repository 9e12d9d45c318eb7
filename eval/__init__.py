"""Evaluation: FAISS retrieval, video classification, LLM-JEPA task scorers, selective decoding."""
