"""Video classification metrics on embeddings: zero-shot, linear probe, attentive probe.

Model-agnostic: everything here takes arrays (clip embeddings, class embeddings, features,
visual tokens) and labels, so any model's or baseline's embeddings are scored the same way.
The calls that run a model (`class_embeddings`, `zero_shot_eval`, `multiple_choice_accuracy`)
live in `vljepa.tasks` and hand their arrays to this module.
- zero-shot: unit clip embeddings (N, D) vs unit class embeddings (C, D) (CLIP-style template
  ensembling is done by `vljepa.tasks.class_embeddings`) -> cosine -> top-1/top-5, per-class
  accuracy, confusion matrix (+ PNG plot);
- linear probe: frozen features -> scikit-learn LogisticRegression, C swept on a validation
  split, refit on train+val at the best C -> test metrics;
- attentive probe (as V-JEPA evaluates frozen encoders): visual tokens (B, N, Dx) -> learned
  query cross-attention pooling -> linear classifier, trained with AdamW.

Label lists for Kinetics-400 / SSv2 / UCF-101 live in eval/labels/ (`load_label_list`).
Accuracies are percentages in [0, 100]. Ties are pessimistic: a true class tied with others is
ranked after them (constant scores give 0 %, never "every clip is class 0"); NaN/inf scores and
labels outside [0, C) are errors.

    metrics = zero_shot_from_embeddings(clip_emb, class_emb, labels, class_names)  # (N, D), (C, D)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

LABEL_LISTS = ("kinetics400", "ssv2", "ucf101")


def load_label_list(name: str) -> list[str]:
    """Class names of a standard dataset (eval/labels/<name>.txt, one per line, in label-id order)."""
    if name not in LABEL_LISTS:
        raise ValueError(f"no bundled label list {name!r}; choose one of {LABEL_LISTS} or pass a text file")
    text = resources.files("eval").joinpath("labels", f"{name}.txt").read_text()
    return [line for line in text.splitlines() if line.strip()]


def classification_metrics(scores: np.ndarray | torch.Tensor, labels: np.ndarray | list[int],
                           class_names: list[str], ks: tuple[int, ...] = (1, 5)) -> dict:
    """Top-k accuracy (%), mean per-class accuracy, per-class accuracy and the confusion matrix.

    Ties are pessimistic: the true class's rank counts every class scoring >= it, and the
    predicted class (confusion matrix) of a tie is a wrong one when one is tied."""
    scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    n_classes = len(class_names)
    labels = check_labels(labels, n_classes)
    if scores.shape != (len(labels), n_classes):
        raise ValueError(f"scores shape {scores.shape} != (n_samples={len(labels)}, n_classes={n_classes})")
    if len(labels) == 0:
        raise ValueError("no samples to classify (0 labels); check the data source")
    bad = np.flatnonzero(~np.isfinite(scores).all(1))
    if bad.size:
        raise ValueError(f"{bad.size} of {len(scores)} score rows contain NaN or inf (rows {bad[:5].tolist()}); "
                         "the embeddings are broken (e.g. an fp16 overflow): fix them before scoring")
    true_score = scores[np.arange(len(labels)), labels][:, None]  # (N, 1)
    rank = (scores >= true_score).sum(1)  # (N,) pessimistic 1-based rank of the true class
    out: dict = {f"top{k}": float(100 * np.mean(rank <= k)) for k in ks if k <= n_classes}
    is_true = np.zeros_like(scores, dtype=bool)
    is_true[np.arange(len(labels)), labels] = True
    pred = np.lexsort((is_true, -scores), axis=1)[:, 0]  # best score; among ties a wrong class first
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)  # rows: true class, cols: predicted
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(1)
    per_class = {name: float(100 * confusion[i, i] / support[i]) for i, name in enumerate(class_names)
                 if support[i] > 0}
    out.update(mean_class_accuracy=float(np.mean(list(per_class.values()))), per_class=per_class,
               confusion=confusion.tolist(), n=len(labels))
    return out


def check_labels(labels, n_classes: int) -> np.ndarray:
    """Labels as int64 in [0, n_classes), or a ValueError naming the first bad one."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or (arr.size and arr.dtype.kind not in "iu"):
        raise ValueError(f"labels must be a 1-D list of integer class ids, got dtype {arr.dtype}, shape {arr.shape}")
    bad = np.flatnonzero((arr < 0) | (arr >= n_classes))
    if bad.size:
        raise ValueError(f"label[{bad[0]}] = {arr[bad[0]]} is not a class id in [0, {n_classes}) "
                         f"({bad.size} such labels); check the label list")
    return arr.astype(np.int64)


def plot_confusion(confusion: list[list[int]] | np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """Row-normalised confusion matrix as a PNG (true class on rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=float)
    cm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.0, 0.35 * len(class_names))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    if len(class_names) <= 40:
        ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def zero_shot_from_embeddings(video_emb: torch.Tensor, class_emb: torch.Tensor, labels: list[int],
                              class_names: list[str], ks: tuple[int, ...] = (1, 5)) -> dict:
    """Metrics for saved embeddings: cosine of unit clip (N, D) and class (C, D) embeddings."""
    scores = F.normalize(torch.as_tensor(video_emb).float(), dim=-1) @ \
        F.normalize(torch.as_tensor(class_emb).float(), dim=-1).T  # (N, C)
    return classification_metrics(scores, labels, class_names, ks)


@dataclass
class LinearProbeConfig:
    """Logistic regression on standardised frozen features, C chosen on a validation split."""

    Cs: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])
    val_fraction: float = 0.2  # used when no validation set is given (stratified split of train)
    max_iter: int = 2000
    seed: int = 0


def _logreg(C: float, cfg: LinearProbeConfig):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=cfg.max_iter, random_state=cfg.seed))


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 class_names: list[str], cfg: LinearProbeConfig | None = None,
                 val_x: np.ndarray | None = None, val_y: np.ndarray | None = None) -> dict:
    """Sweep C on validation accuracy, refit on train+val at the best C, report test metrics."""
    from sklearn.model_selection import train_test_split

    cfg = cfg or LinearProbeConfig()
    train_x, test_x = np.asarray(train_x, dtype=np.float32), np.asarray(test_x, dtype=np.float32)
    if val_x is None:
        train_x, val_x, train_y, val_y = train_test_split(
            train_x, np.asarray(train_y), test_size=cfg.val_fraction, random_state=cfg.seed,
            stratify=np.asarray(train_y))
    val_acc = {}
    for C in tqdm(cfg.Cs, desc="linear probe C sweep", leave=False):
        val_acc[C] = float(100 * _logreg(C, cfg).fit(train_x, train_y).score(val_x, val_y))
    best = max(cfg.Cs, key=lambda c: (val_acc[c], -c))  # ties -> stronger regularisation
    clf = _logreg(best, cfg).fit(np.concatenate([train_x, val_x]), np.concatenate([train_y, val_y]))
    proba = np.zeros((len(test_x), len(class_names)))
    proba[:, clf.classes_] = clf.predict_proba(test_x)  # classes absent from training keep score 0
    return {"best_C": best, "val_accuracy": {str(c): a for c, a in val_acc.items()},
            "test": classification_metrics(proba, test_y, class_names)}


class AttentiveProbe(nn.Module):
    """Cross-attention pooling of frozen visual tokens with learned queries, then a linear classifier."""

    def __init__(self, dim: int, n_classes: int, n_heads: int = 4, n_queries: int = 1):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"token dim {dim} must be divisible by n_heads={n_heads}")
        self.queries = nn.Parameter(torch.randn(1, n_queries, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, n_heads, batch_first=True)
        self.head = nn.Linear(dim * n_queries, n_classes)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, N, D), mask (B, N) with 1 = real token -> logits (B, n_classes)."""
        x = self.norm(tokens)
        q = self.queries.expand(x.shape[0], -1, -1)  # (B, Q, D)
        pad = None if mask is None else mask == 0
        pooled, _ = self.attn(q, x, x, key_padding_mask=pad, need_weights=False)  # (B, Q, D)
        return self.head(pooled.flatten(1))


@dataclass
class AttentiveProbeConfig:
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 32
    n_heads: int = 4
    n_queries: int = 1
    seed: int = 0


def train_attentive_probe(train_tokens: torch.Tensor, train_y: torch.Tensor, test_tokens: torch.Tensor,
                          test_y: torch.Tensor, class_names: list[str],
                          cfg: AttentiveProbeConfig | None = None) -> tuple[AttentiveProbe, dict]:
    """Train an AttentiveProbe on cached tokens (N, T, D) -> (probe, {"losses", "test" metrics})."""
    cfg = cfg or AttentiveProbeConfig()
    torch.manual_seed(cfg.seed)
    probe = AttentiveProbe(train_tokens.shape[-1], len(class_names), cfg.n_heads, cfg.n_queries)
    opt = torch.optim.AdamW(probe.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    y = torch.as_tensor(train_y, dtype=torch.long)
    losses = []
    for _ in tqdm(range(cfg.epochs), desc="attentive probe", leave=False):
        perm = torch.randperm(len(y))
        total = 0.0
        for s in range(0, len(y), cfg.batch_size):
            idx = perm[s:s + cfg.batch_size]
            loss = F.cross_entropy(probe(train_tokens[idx].float()), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(y))
    probe.eval()
    with torch.no_grad():
        logits = torch.cat([probe(test_tokens[s:s + 256].float()) for s in range(0, len(test_tokens), 256)])
    return probe, {"losses": losses, "test": classification_metrics(logits, test_y, class_names)}
