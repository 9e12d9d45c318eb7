"""A tiny stand-in for VLJepaModel (like lm-eval's dummy model): the protocol, no training.

`encode_text` is a bag of seeded word vectors; a clip's class id is written in its first pixel
(pixel_values[b, 0, 0, 0, 0]) and `predict` returns the text embedding of that class name
(plus a little noise), so zero-shot / retrieval / multiple choice have known answers.
"""

from __future__ import annotations

import zlib

import torch


class FakeVLJepa:
    def __init__(self, class_texts: list[str], dim: int = 32, noise: float = 0.05):
        self.class_texts, self.dim, self.noise = list(class_texts), dim, noise
        self.calls = {"encode_video": 0, "encode_text": 0, "predict": 0}

    def _word(self, word: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(word.encode()))
        return torch.randn(self.dim, generator=g)

    def encode_text(self, texts: list[str], normalize: bool = False) -> torch.Tensor:
        self.calls["encode_text"] += 1
        return torch.stack([sum(self._word(w) for w in t.lower().split()) for t in texts])  # (B, D)

    def encode_video(self, pixel_values: torch.Tensor) -> torch.Tensor:
        self.calls["encode_video"] += 1
        ids = pixel_values[:, 0, 0, 0, 0].round().long().tolist()
        base = self.encode_text([self.class_texts[i] for i in ids])  # (B, D)
        g = torch.Generator().manual_seed(len(ids))
        tokens = torch.randn(len(ids), 4, self.dim, generator=g) * self.noise
        return tokens + base[:, None]  # (B, 4, D) visual tokens

    def predict(self, query: list[str], pixel_values: torch.Tensor | None = None,
                visual: torch.Tensor | None = None, normalize: bool = False) -> torch.Tensor:
        self.calls["predict"] += 1
        if visual is None:
            visual = self.encode_video(pixel_values)
        assert len(query) == visual.shape[0]
        return visual.mean(1)  # (B, D)


def fake_clips(labels: list[int], frames: int = 2, size: int = 4) -> torch.Tensor:
    """pixel_values (B, T, 3, S, S) with each clip's label in its first pixel."""
    x = torch.zeros(len(labels), frames, 3, size, size)
    x[:, 0, 0, 0, 0] = torch.tensor(labels, dtype=torch.float32)
    return x
