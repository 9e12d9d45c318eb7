"""Representation diagnostics of LLM-JEPA: how Enc(Text) relates to Enc(Code) on a test set.

Data flow: chat records -> `encode(records, View.TEXT)` and `encode(records, View.CODE)` ->
T, C (N, D) -> (1) cosine of each pair vs mismatched pairs, (2) a least-squares linear map
T -> C (fraction of variance of C explained, fitted on half the records and measured on the
other half too, so N < D cannot fake a perfect fit; top singular values of the map and of
C - T), (3) Text->Code retrieval through FAISS (`eval.retrieval`): is a Text's own Code in
its top K? -> dict + `representation.png` + `representation.json`.

`encode` is any callable `(records, view) -> (N, D) array`, so saved embeddings and test
doubles run the same way; `hf_view_encoder(model, tok)` is the one matching training
(`llm_jepa.collator`): each view rendered ALONE with the chat template (Text = user turn,
optionally + k predictor tokens; Code = assistant turn, sent as 'user' for Gemma), last-layer
hidden state at the view's last content (or predictor) token, located by span tracking.

    report = representation_report(hf_view_encoder(model, tok), records, "runs/eval/repr")
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from jepa_common.io import atomic_write, atomic_write_json


class View(enum.Enum):
    TEXT = "text"  # the user turn (Text view)
    CODE = "code"  # the assistant turn (Code view)


Encoder = Callable[[list[dict], View], np.ndarray]


def hf_view_encoder(model: torch.nn.Module, tok, predictors: int = 0, batch_size: int = 32) -> Encoder:
    """Enc() of training for a causal LM (or PEFT model): last hidden state at the view's last token."""
    from llm_jepa.collator import code_view_role, predictor_tokens
    from llm_jepa.data import encode_with_span, split_record

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, code_role = base.get_decoder(), code_view_role(tok)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    marks = "".join(predictor_tokens(predictors))

    def view_ids(record: dict, view: View) -> tuple[list[int], int]:
        _, user, assistant = split_record(record)
        role, content = ("user", user + marks) if view is View.TEXT else (code_role, assistant)
        enc = encode_with_span(tok, [{"role": role, "content": content}], 0, content)
        return enc.ids, enc.last

    @torch.no_grad()
    def encode(records: list[dict], view: View) -> np.ndarray:
        device, out = next(decoder.parameters()).device, []
        encoded = [view_ids(r, view) for r in records]
        for s in tqdm(range(0, len(encoded), batch_size), desc=f"encode {view.value}", leave=False):
            chunk = encoded[s:s + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)  # (B, T) right padded
            mask = torch.zeros_like(ids)
            for row, (x, _) in enumerate(chunk):
                ids[row, :len(x)], mask[row, :len(x)] = torch.tensor(x), 1
            hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B,T,D)
            last = torch.tensor([li for _, li in chunk], device=device)
            out.append(hidden[torch.arange(len(chunk), device=device), last].float().cpu().numpy())  # (B, D)
        return np.concatenate(out)

    return encode


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


def representation_report(encode: Encoder, records: list[dict], out_dir: str | Path | None = None
                          ) -> dict[str, Any]:
    """All diagnostics for `records`; with `out_dir`, also representation.json and .png there."""
    text, code = encode(records, View.TEXT), encode(records, View.CODE)  # (N, D) each
    if text.shape != code.shape:
        raise ValueError(f"Text embeddings {text.shape} and Code embeddings {code.shape} differ in shape")
    cos, fit = cosine_stats(text, code), linear_fit(text, code)
    report = {"n": len(records), "dim": text.shape[1], **{k: v for k, v in cos.items() if not k.startswith("_")},
              **{k: v for k, v in fit.items() if not k.startswith("_")}, **text_to_code_recall(text, code)}
    if out_dir is not None:
        out_dir = Path(out_dir)
        report["plot"] = str(plot_report(cos, fit, out_dir / "representation.png"))
        atomic_write_json(out_dir / "representation.json", report)
    return report
