"""Infrastructure shared by `llm_jepa`, `vljepa` and `eval`: typed configs, atomic I/O,
run metadata and tiny offline models/tokenizers built from real architecture configs.

Kept separate so the three user-facing packages never copy each other's helpers.
"""
