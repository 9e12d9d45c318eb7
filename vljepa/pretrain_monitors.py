"""Collapse monitors for V-JEPA pretraining: feature spread, effective rank, a cheap linear probe.

A JEPA can lower its loss by making every clip look the same (collapse). Three cheap signals,
computed on a fixed set of labelled synthetic clips that pretraining never trains on:

    encoder tokens (N, T'*H'*W', D) --mean over tokens--> pooled (N, D)
      -> std:      per-dimension standard deviation across clips, averaged over dimensions
      -> eff_rank: RankMe (Garrido et al. 2023): exp(entropy of the normalised singular values) of
                   the centred pooled features; D for isotropic features, 1 for a single direction
    encoder tokens -> token_std (across clips, per position), token_rank (RankMe of all tokens):
                   dimensional collapse of the tokens the VL-JEPA predictor reads
    encoder tokens --mean over space per time step--> (N, T'*D)  (keeps the motion order)
      -> probe_<label>: accuracy of a ridge-regression classifier (closed form, standardised
                        features) fit on the probe's train clips, scored on its test clips, for
                        the action (the demo's class), the colour and the digit
    encoder tokens (N, T'*H'*W', D)
      -> attentive_<label>: V-JEPA's evaluation protocol in small: a learned query cross-attending
                        to all tokens (AttentiveProbe), trained a few hundred AdamW steps. It reads
                        tokens as the VL-JEPA predictor does, so it tracks the demo's downstream
                        metrics where the pooled linear probe can mislead (docs/vljepa.md)

`Monitor(cfg, transform, num_frames)(encoder)` returns one row of these numbers; vljepa.pretrain
logs it every `monitor.every` steps (and at step 0, i.e. the random encoder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import VJEPA2Model

from vljepa.processing import VideoTransform
from vljepa.synthetic import COLOURS, make_clip_dataset

LABELS = ("action", "colour", "digit")


@dataclass
class MonitorConfig:
    every: int = 100  # optimizer steps between monitor rows (0 = only before and after)
    train_clips: int = 512  # probe fit set (synthetic seed `seed`)
    test_clips: int = 256  # probe score set (synthetic seed `seed + 1`)
    seed: int = 50_000  # far from pretraining and demo seeds
    ridge: float = 1.0  # L2 penalty of the linear probe (features are standardised)
    labels: list[str] = field(default_factory=lambda: list(LABELS))
    attentive_labels: list[str] = field(default_factory=lambda: ["action"])  # attentive probes ([] = none)
    attentive_steps: int = 300  # AdamW steps of each attentive probe


def feature_std(pooled: torch.Tensor) -> float:
    """Mean over dimensions of the across-clip std: (N, D) -> scalar; 0 = full collapse."""
    return float(pooled.std(dim=0).mean())


def effective_rank(pooled: torch.Tensor, eps: float = 1e-12) -> float:
    """RankMe of (N, D) features: exp of the entropy of the normalised singular values."""
    s = torch.linalg.svdvals(pooled - pooled.mean(dim=0))  # (min(N, D),)
    p = s / (s.sum() + eps) + eps
    return float(torch.exp(-(p * p.log()).sum()))


def ridge_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                ridge: float = 1.0) -> float:
    """Accuracy of a one-vs-all ridge classifier: (n, F) features, (n,) int labels -> test accuracy."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    a, b = (train_x - mean) / std, (test_x - mean) / std
    a = torch.cat([a, torch.ones(len(a), 1)], dim=1).double()  # (n, F+1) with a bias column
    b = torch.cat([b, torch.ones(len(b), 1)], dim=1).double()
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    onehot = torch.nn.functional.one_hot(train_y, n_classes).double() * 2 - 1  # (n, C) in {-1, 1}
    weights = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ onehot)
    return float(((b @ weights).argmax(1) == test_y).float().mean())


def probe_labels(clips: list[dict], name: str) -> torch.Tensor:
    """Integer labels of synthetic clips for a probe: action, colour or digit."""
    if name == "action":
        return torch.tensor([c["label"] for c in clips])
    if name == "colour":
        names = list(COLOURS)
        return torch.tensor([names.index(c["colour"]) for c in clips])
    if name == "digit":
        return torch.tensor([c["digit"] for c in clips])
    raise ValueError(f"unknown probe label {name!r}; choose from {list(LABELS)}")


class AttentiveProbe(nn.Module):
    """V-JEPA's frozen-evaluation head, small: Linear(D -> h) + learned positions, one learned query
    cross-attending to all tokens, LayerNorm, Linear -> classes. Reads tokens the way a VL-JEPA
    predictor does (shared weights over tokens), unlike a linear probe on pooled features."""

    def __init__(self, dim: int, num_tokens: int, num_classes: int, hidden: int = 64, heads: int = 4):
        super().__init__()
        self.proj = nn.Linear(dim, hidden)
        self.pos = nn.Parameter(torch.zeros(num_tokens, hidden))
        self.query = nn.Parameter(torch.randn(1, 1, hidden) * 0.02)
        self.attn = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.proj(tokens) + self.pos  # (B, N, h)
        pooled, _ = self.attn(self.query.expand(len(x), -1, -1), x, x)  # (B, 1, h)
        return self.head(self.norm(pooled[:, 0]))  # (B, C)


def attentive_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                    steps: int = 300, batch_size: int = 32, lr: float = 2e-3, seed: int = 0) -> float:
    """Test accuracy of an AttentiveProbe trained with AdamW on frozen tokens (n, N, D)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        n_classes = int(max(train_y.max(), test_y.max())) + 1
        probe = AttentiveProbe(train_x.shape[-1], train_x.shape[1], n_classes)
        opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.01)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(0, len(train_x), (min(batch_size, len(train_x)),), generator=gen)
            loss = nn.functional.cross_entropy(probe(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((probe(test_x).argmax(1) == test_y).float().mean())


@torch.no_grad()
def encoder_tokens(encoder: VJEPA2Model, pixel_values: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Frozen-encoder tokens (N, T'*H'*W', D), batched, in eval mode (restored afterwards)."""
    was_training = encoder.training
    encoder.eval()
    out = torch.cat([encoder(pixel_values_videos=pixel_values[i:i + batch_size], skip_predictor=True)
                     .last_hidden_state for i in range(0, len(pixel_values), batch_size)])
    encoder.train(was_training)
    return out


def time_pooled(tokens: torch.Tensor, steps: int) -> torch.Tensor:
    """(N, T'*H'*W', D) -> mean over space per time step, concatenated: (N, T'*D)."""
    n, _, d = tokens.shape
    return tokens.reshape(n, steps, -1, d).mean(dim=2).reshape(n, steps * d)


class Monitor:
    """Fixed labelled clips (preprocessed once) and the collapse signals of an encoder on them."""

    def __init__(self, cfg: MonitorConfig, transform: VideoTransform, num_frames: int, size: int = 32):
        for name in [*cfg.labels, *cfg.attentive_labels]:
            if name not in LABELS:
                raise ValueError(f"monitor.labels: unknown label {name!r}; choose from {list(LABELS)}")
        self.cfg = cfg
        train = make_clip_dataset(cfg.train_clips, n_frames=num_frames, size=size, seed=cfg.seed)
        test = make_clip_dataset(cfg.test_clips, n_frames=num_frames, size=size, seed=cfg.seed + 1)
        clips = train + test  # raw frames are dropped after preprocessing; only labels are kept
        self.pixels = torch.stack([transform(c["frames"]) for c in clips])  # (N, T, 3, s, s)
        self.n_train = len(train)
        self.labels = {name: probe_labels(clips, name) for name in cfg.labels}
        self.attentive_labels = {name: probe_labels(clips, name) for name in cfg.attentive_labels}

    def __call__(self, encoder: VJEPA2Model) -> dict[str, float]:
        tokens = encoder_tokens(encoder, self.pixels)  # (N, K, D)
        pooled = tokens.mean(dim=1)  # (N, D)
        steps = encoder.config.frames_per_clip // encoder.config.tubelet_size
        probe_x = time_pooled(tokens, steps)  # (N, T'*D)
        row = {"std": feature_std(pooled), "eff_rank": effective_rank(pooled),
               "token_std": float(tokens.std(dim=0).mean()), "token_rank": effective_rank(tokens.flatten(0, 1))}
        k = self.n_train
        for name, y in self.labels.items():
            row[f"probe_{name}"] = ridge_probe(probe_x[:k], y[:k], probe_x[k:], y[k:], self.cfg.ridge)
        for name, y in self.attentive_labels.items():
            row[f"attentive_{name}"] = attentive_probe(tokens[:k], y[:k], tokens[k:], y[k:], self.cfg.attentive_steps)
        return row


def plot_curves(history: list[dict], monitors: list[dict], path, baseline: dict | None = None) -> None:
    """Loss per mask type, feature std, effective rank and probe accuracies against the step.
    Dashed lines: `baseline` (default: the step-0 row, i.e. the random encoder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    baseline = baseline or (monitors[0] if monitors else {})
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    steps = [h["step"] for h in history]
    for key in sorted(k for k in (history[0] if history else {}) if k.startswith("loss_mask")):
        axes[0].plot(steps, [h[key] for h in history], label=key.replace("loss_", ""), lw=0.8)
    axes[0].set(title="V-JEPA L1 loss", xlabel="step")
    m_steps = [m["step"] for m in monitors]
    panels = [(axes[1], ["std", "token_std"], "across-clip std"), (axes[2], ["eff_rank", "token_rank"], "effective rank"),
              (axes[3], [k for k in (monitors[0] if monitors else {}) if k.startswith(("probe_", "attentive_"))],
               "probe accuracy")]
    for ax, keys, title in panels:
        for i, key in enumerate(keys):
            ax.plot(m_steps, [m[key] for m in monitors], marker="o", ms=3, color=f"C{i}", label=key)
            if key in baseline:
                ax.axhline(baseline[key], color=f"C{i}", ls="--", lw=0.8)
        ax.set(title=title + " (dashed: random)", xlabel="step")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
