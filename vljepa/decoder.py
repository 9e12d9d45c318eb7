"""The Y-decoder: turns one embedding of the shared space into text, only when asked.

The VL-JEPA paper calls it "lightweight" and does not describe it; ours is any Hugging Face
causal LM conditioned on the embedding through a learned prefix:

    embedding (B, D) -> L2-normalise -> Linear(D -> p*H) -> p prefix vectors (B, p, H)
    [prefix ; caption tokens ; eos] -> causal LM -> next-token loss on the caption tokens only

Training pairs are (Y-encoder(text), text); `train_decoder` takes any embeddings, so the same
call continues on (predicted embedding, text) pairs -- clips, and the sliding windows of
training long videos labelled with their dominant event -- while `noise_std` adds Gaussian noise
and `mix_prob` blends examples with another one (the label keeps the larger weight): all of it
closes the gap between target embeddings and the predicted, window-mixed ones a stream hands
the decoder. The decoder never shapes the VL-JEPA model: it is trained separately.

    dec = YDecoder.build(embed_dim=256, corpus=captions)       # tiny Llama of the real class
    train_decoder(dec, model.encode_text(captions), captions, DecoderTrainConfig(steps=300))
    dec.generate(pred_embeddings)                               # -> list[str]
    save_decoder(dec, "runs/vl"); dec = load_decoder("runs/vl")  # <model_dir>/y_decoder/
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from jepa_common.io import atomic_write, atomic_write_json
from jepa_common.tiny import tiny_causal_lm, tiny_tokenizer

SUBDIR = "y_decoder"


@dataclass
class DecoderTrainConfig:
    """How `train_decoder` fits the decoder on (embedding, text) pairs."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.0
    noise_std: float = 0.0  # Gaussian noise on the unit embedding, per coordinate
    mix_prob: float = 0.0  # fraction of examples mixed with another example's embedding ...
    mix_min: float = 0.6  # ... keeping a weight in [mix_min, 1] on their own (their text is the label)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.mix_prob <= 1 or not 0.5 <= self.mix_min <= 1:
            raise ValueError(f"need 0 <= mix_prob <= 1 and 0.5 <= mix_min <= 1 (the label must dominate), "
                             f"got {self.mix_prob}, {self.mix_min}")


class YDecoder(nn.Module):
    """Prefix-conditioned causal LM: `forward(embeddings, texts)` -> loss dict; `generate(embeddings)`."""

    def __init__(self, lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, embed_dim: int,
                 prefix_tokens: int = 4, max_length: int = 48):
        super().__init__()
        if tokenizer.eos_token_id is None:
            raise ValueError("the Y-decoder's tokenizer needs an eos token so generation can stop")
        self.lm, self.tokenizer = lm, tokenizer
        self.embed_dim, self.prefix_tokens, self.max_length = embed_dim, prefix_tokens, max_length
        self.hidden = lm.get_input_embeddings().embedding_dim
        self.prefix = nn.Linear(embed_dim, prefix_tokens * self.hidden)

    @classmethod
    def build(cls, embed_dim: int, corpus: Sequence[str], family: str = "llama", hidden_size: int = 128,
              num_layers: int = 2, prefix_tokens: int = 4, vocab_size: int = 512, seed: int = 0) -> YDecoder:
        """A small decoder of a real LM class with a BPE trained on `corpus` (offline)."""
        tok = tiny_tokenizer(family, corpus, vocab_size=vocab_size)
        lm = tiny_causal_lm(family, tok, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
        return cls(lm, tok, embed_dim, prefix_tokens)

    def _prefix(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.ndim != 2 or embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"the Y-decoder takes embeddings (B, {self.embed_dim}), got shape {tuple(embeddings.shape)}")
        z = F.normalize(embeddings.to(self.prefix.weight.dtype), dim=-1)  # (B, D)
        return self.prefix(z).view(len(z), self.prefix_tokens, self.hidden)  # (B, p, H)

    def forward(self, embeddings: torch.Tensor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Teacher-forced next-token loss of `texts` given their embeddings (B, D)."""
        enc = self.tokenizer(list(texts), add_special_tokens=False, truncation=True,
                             max_length=self.max_length - 1)
        eos = self.tokenizer.eos_token_id
        ids = [x + [eos] for x in enc["input_ids"]]
        width = max(len(x) for x in ids)
        dev = self.prefix.weight.device
        tokens = torch.full((len(ids), width), eos, dtype=torch.long, device=dev)  # (B, L)
        mask = torch.zeros((len(ids), width), dtype=torch.long, device=dev)
        for i, x in enumerate(ids):
            tokens[i, : len(x)] = torch.tensor(x, device=dev)
            mask[i, : len(x)] = 1
        prefix = self._prefix(embeddings)  # (B, p, H)
        inputs = torch.cat([prefix, self.lm.get_input_embeddings()(tokens)], dim=1)  # (B, p+L, H)
        attn = torch.cat([torch.ones(prefix.shape[:2], dtype=torch.long, device=dev), mask], dim=1)
        labels = torch.cat([torch.full(prefix.shape[:2], -100, device=dev), tokens.masked_fill(mask == 0, -100)], 1)
        out = self.lm(inputs_embeds=inputs, attention_mask=attn, labels=labels)
        return {"loss": out.loss}

    @torch.no_grad()
    def generate(self, embeddings: torch.Tensor, max_new_tokens: int = 24, num_beams: int = 1,
                 do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0) -> list[str]:
        """Captions for (B, D) embeddings; greedy by default."""
        was_training = self.training
        self.eval()
        embeddings = torch.as_tensor(embeddings, device=self.prefix.weight.device)
        _check_finite(embeddings)
        prefix = self._prefix(embeddings)  # (B, p, H)
        attn = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        out = self.lm.generate(inputs_embeds=prefix, attention_mask=attn, max_new_tokens=max_new_tokens,
                               num_beams=num_beams, do_sample=do_sample, eos_token_id=self.tokenizer.eos_token_id,
                               pad_token_id=self.tokenizer.eos_token_id, **sampling)  # (B, new tokens)
        self.train(was_training)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


def train_decoder(decoder: YDecoder, embeddings: torch.Tensor, texts: Sequence[str],
                  cfg: DecoderTrainConfig, progress: bool = True) -> list[float]:
    """AdamW on (embedding, text) pairs for `cfg.steps` minibatches; returns the loss per step."""
    if len(embeddings) != len(texts):
        raise ValueError(f"{len(embeddings)} embeddings but {len(texts)} texts; pass one text per embedding")
    if not len(texts):
        raise ValueError("train_decoder needs at least one (embedding, text) pair")
    gen = torch.Generator().manual_seed(cfg.seed)
    embeddings = embeddings.detach().float()  # (N, D)
    _check_finite(embeddings)
    opt = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, cfg.steps // 10)  # linear warm-up, then linear decay to 10%
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, 1.0 - 0.9 * max(0, s - warm) / max(1, cfg.steps - warm)))
    decoder.train()
    losses = []
    for _ in tqdm(range(cfg.steps), desc="y-decoder", disable=not progress):
        idx = torch.randint(len(texts), (min(cfg.batch_size, len(texts)),), generator=gen)
        z = F.normalize(embeddings[idx], dim=-1)  # (b, D)
        if cfg.mix_prob > 0:
            z = _mix(z, cfg, gen)
        if cfg.noise_std > 0:
            z = z + cfg.noise_std * torch.randn(z.shape, generator=gen)
        loss = decoder(z.to(decoder.prefix.weight.device), [texts[i] for i in idx])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    decoder.eval()
    return losses


def _check_finite(embeddings: torch.Tensor) -> None:
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or inf (a diverged model or a broken input); the Y-decoder needs finite ones")


def _mix(z: torch.Tensor, cfg: DecoderTrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Blend a `mix_prob` fraction of the unit embeddings (b, D) with another row of the batch at a
    weight in [mix_min, 1] on their own: what a window straddling two events looks like."""
    n = len(z)
    lam = cfg.mix_min + (1 - cfg.mix_min) * torch.rand(n, generator=gen)  # (b,)
    lam = torch.where(torch.rand(n, generator=gen) < cfg.mix_prob, lam, torch.ones(n))
    other = z[torch.randint(n, (n,), generator=gen)]
    return F.normalize(lam[:, None] * z + (1 - lam[:, None]) * other, dim=-1)


def save_decoder(decoder: YDecoder, model_dir: str | Path) -> Path:
    """Write `<model_dir>/y_decoder/` (LM + tokenizer, prefix weights, decoder.json)."""
    out = Path(model_dir) / SUBDIR
    decoder.lm.save_pretrained(out / "lm")
    decoder.tokenizer.save_pretrained(out / "lm")
    state = {k: v.detach().contiguous().cpu() for k, v in decoder.prefix.state_dict().items()}
    atomic_write(out / "prefix.safetensors", lambda p: save_file(state, str(p)))
    meta = {"embed_dim": decoder.embed_dim, "prefix_tokens": decoder.prefix_tokens,
            "max_length": decoder.max_length}
    atomic_write_json(out / "decoder.json", meta)
    return out


def load_decoder(model_dir: str | Path, device: str | torch.device = "cpu") -> YDecoder:
    """Exact inverse of `save_decoder`."""
    src = Path(model_dir) / SUBDIR
    if not (src / "decoder.json").is_file():
        raise FileNotFoundError(f"no Y-decoder in {src}: train one and save it with save_decoder(decoder, "
                                f"{str(model_dir)!r}) first")
    meta = json.loads((src / "decoder.json").read_text())
    lm = AutoModelForCausalLM.from_pretrained(src / "lm")
    tok = AutoTokenizer.from_pretrained(src / "lm")
    dec = YDecoder(lm, tok, embed_dim=meta["embed_dim"], prefix_tokens=meta["prefix_tokens"],
                   max_length=meta["max_length"])
    dec.prefix.load_state_dict(load_file(str(src / "prefix.safetensors")))
    return dec.to(device).eval()


def decoder_config_dict(cfg: DecoderTrainConfig) -> dict:
    """Plain dict of a training config, for results files."""
    return asdict(cfg)
