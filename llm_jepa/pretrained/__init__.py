"""Small pretrained causal LMs shipped inside the package, loadable by short name.

`mini-llama` (folder `mini_llama/`): a ~2M-parameter Llama-architecture model with its own 2k BPE
tokenizer and the Llama-3 chat template, pretrained by `llm_jepa.pretrain` with next-token
prediction on the NL-RX-free corpus of `llm_jepa.corpus` (no NL-RX test record, no NL-RX regex).
Its README.md gives the exact command, the budget and the held-out loss. It is the starting point
of the pretrained-then-finetuned NL-RX test (docs/llm_jepa_reproduction.md) and of tests that
want a model whose states already carry meaning:

    llm-jepa train --config recipes/llm_jepa/tiny_cpu.yaml --set model.name_or_path=mini-llama
    from llm_jepa.pretrained import pretrained_path; AutoModelForCausalLM.from_pretrained(pretrained_path("mini-llama"))
"""

from __future__ import annotations

from jepa_common.shipped import shipped_folder

_FOLDERS = {"mini-llama": "mini_llama"}


def pretrained_names() -> list[str]:
    return sorted(_FOLDERS)


def pretrained_path(name: str) -> str | None:
    """Folder of the shipped model called `name`, or None when `name` is not a shipped model's name."""
    return shipped_folder(__name__, _FOLDERS, name)
