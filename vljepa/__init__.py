"""VL-JEPA: predict target-text embeddings from a frozen vision encoder; selective decoding."""
