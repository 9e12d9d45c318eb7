"""Representation diagnostics on two paired embedding arrays (e.g. LLM-JEPA's Enc(Text), Enc(Code)).

Data flow: T, C (N, D) arrays of paired embeddings -> (1) cosine of each pair vs mismatched
pairs, (2) a least-squares linear map T -> C (fraction of variance of C explained, fitted on
half the pairs and measured on the other half too, so N < D cannot fake a perfect fit; top
singular values of the map and of C - T), (3) T -> C retrieval through FAISS
(`eval.retrieval`): is a row's own pair in its top K? -> dict (+ `representation.png` and
`representation.json`).

Model-agnostic: any embeddings work (saved arrays, a baseline's, a test double's).
`llm_jepa.representation` turns a causal LM and chat records into T and C the way training does.

    report = representation_metrics(text_emb, code_emb, "runs/eval/repr")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jepa_common.io import atomic_write, atomic_write_json


def cosine_stats(text: np.ndarray, code: np.ndarray) -> dict[str, Any]:
    """cos(T_i, C_i) summary, and the same for mismatched pairs (C shifted by one) as a baseline."""
    t = text / np.linalg.norm(text, axis=1, keepdims=True).clip(1e-12)
    c = code / np.linalg.norm(code, axis=1, keepdims=True).clip(1e-12)
    matched = (t * c).sum(1)  # (N,)
    mismatched = (t * np.roll(c, 1, axis=0)).sum(1)  # (N,)
    q = np.quantile(matched, [0.1, 0.5, 0.9])
    return {"cos_mean": float(matched.mean()), "cos_std": float(matched.std()),
            "cos_q10_q50_q90": [float(x) for x in q], "cos_mismatched_mean": float(mismatched.mean()),
            "_matched": matched, "_mismatched": mismatched}


def _r2(pred: np.ndarray, target: np.ndarray, mean: np.ndarray) -> float:
    """Fraction of the variance of `target` (around `mean`) explained by `pred`."""
    total = ((target - mean) ** 2).sum()
    return float(1.0 - ((target - pred) ** 2).sum() / max(total, 1e-12))


def linear_fit(text: np.ndarray, code: np.ndarray, top: int = 10, seed: int = 0) -> dict[str, Any]:
    """Least squares C ~ [T, 1] W: in-sample and held-out R^2; singular values of W and of C - T."""
    n = len(text)
    if n < 4:
        raise ValueError(f"linear fit needs at least 4 records, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    fit, held = perm[: n // 2], perm[n // 2:]
    design = np.hstack([text, np.ones((n, 1))])  # (N, D+1)
    w, *_ = np.linalg.lstsq(design[fit], code[fit], rcond=None)  # (D+1, D)
    mean = code[fit].mean(0)
    full_w, *_ = np.linalg.lstsq(design, code, rcond=None)
    sv_map = np.linalg.svd(full_w[:-1], compute_uv=False)
    diff = code - text
    sv_diff = np.linalg.svd(diff - diff.mean(0), compute_uv=False)
    return {"r2_in_sample": _r2(design @ full_w, code, code.mean(0)),
            "r2_held_out": _r2(design[held] @ w, code[held], mean),
            "n_fit": len(fit), "n_held_out": len(held),
            "map_singular_values": [float(x) for x in sv_map[:top]],
            "diff_singular_values": [float(x) for x in sv_diff[:top]],
            "_sv_map": sv_map, "_sv_diff": sv_diff}


def text_to_code_recall(text: np.ndarray, code: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Text->Code retrieval over the test set (exact cosine in FAISS): R@k in percent."""
    from eval.retrieval import retrieval_metrics, retrieve

    depth = len(code) if len(code) <= 5000 else max(ks)  # full ranking: exact median/mean rank
    _, ids = retrieve(text.astype(np.float32), code.astype(np.float32), depth)  # (N, depth)
    metrics = retrieval_metrics(ids, [{i} for i in range(len(text))], ks=tuple(k for k in ks if k <= depth))
    return {f"t2c_{k}": v for k, v in metrics.items()}


def plot_report(cos: dict, fit: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    bins = np.linspace(-1.0, 1.0, 81)  # fixed range: a constant cosine is still plottable
    a.hist(np.clip(cos["_matched"], -1, 1), bins=bins, alpha=0.7, label="own pair")
    a.hist(np.clip(cos["_mismatched"], -1, 1), bins=bins, alpha=0.7, label="mismatched")
    a.set_xlabel("cos(Enc(Text), Enc(Code))")
    a.legend()
    for key, label in (("_sv_map", "linear map T->C"), ("_sv_diff", "Enc(Code) - Enc(Text)")):
        sv = fit[key]
        b.semilogy(np.arange(1, len(sv) + 1), sv / max(sv[0], 1e-12), label=label)
    b.set_xlabel("singular value index")
    b.set_ylabel("normalised singular value")
    b.legend()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def representation_metrics(text: np.ndarray, code: np.ndarray, out_dir: str | Path | None = None
                           ) -> dict[str, Any]:
    """All diagnostics for paired arrays (N, D); with `out_dir`, also representation.json and .png there."""
    if text.shape != code.shape:
        raise ValueError(f"Text embeddings {text.shape} and Code embeddings {code.shape} differ in shape")
    cos, fit = cosine_stats(text, code), linear_fit(text, code)
    report = {"n": len(text), "dim": text.shape[1], **{k: v for k, v in cos.items() if not k.startswith("_")},
              **{k: v for k, v in fit.items() if not k.startswith("_")}, **text_to_code_recall(text, code)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        report["plot"] = str(plot_report(cos, fit, out_dir / "representation.png"))
        atomic_write_json(out_dir / "representation.json", report)
    return report
