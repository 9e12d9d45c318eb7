"""Model-side task calls for a trained VL-JEPA (DESIGN.md section 1, "Tasks from one model").

Every call works on any object with `predict(query, pixel_values=..., visual=...)` and
`encode_text(texts)` (a `VLJepaModel`, a baseline, a test double), and compares L2-normalised
embeddings by cosine similarity:

- `zero_shot_scores` / `zero_shot_classify`: clip embedding vs the Y-encoder embedding of each
  class name -> (B, C) scores / argmax.
- `multiple_choice`: each clip's own question as the query, nearest of its own candidates.
- `class_embeddings` / `zero_shot_eval` / `multiple_choice_accuracy`: the model side of the
  classification evaluation; metrics come from the model-agnostic `eval.classify`.
- `retrieval_scores`: text-to-video retrieval, (n_text, n_video) = caption embeddings vs the
  clips' predicted embeddings; `recall_at_k` scores a ranking.

    scores = zero_shot_scores(model, ["moves left", "grows"], pixel_values=clips)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from eval.classify import zero_shot_from_embeddings


def _device(model) -> torch.device:
    """Where the model's weights live (CPU for test doubles without parameters)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else torch.device("cpu")


def _default_query(model) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "default_query", "")


@torch.no_grad()
def video_embeddings(model, pixel_values: torch.Tensor | None = None, visual: torch.Tensor | None = None,
                     query: str | list[str] | None = None, batch_size: int = 64) -> torch.Tensor:
    """Normalised predicted embeddings (B, D) of clips, in batches; query: one for all, or one per clip."""
    source = pixel_values if pixel_values is not None else visual
    if source is None or (pixel_values is not None and visual is not None):
        raise ValueError("pass exactly one of pixel_values (B, T, C, H, W) or visual (B, N, Dx)")
    n = source.shape[0]
    queries = [query if query is not None else _default_query(model)] * n if not isinstance(query, list) else query
    if len(queries) != n:
        raise ValueError(f"{len(queries)} queries for {n} clips")
    out, device = [], _device(model)
    for i in range(0, n, batch_size):
        chunk = source[i:i + batch_size].to(device)  # the model may be on a GPU
        kw = {"pixel_values": chunk} if pixel_values is not None else {"visual": chunk}
        out.append(F.normalize(model.predict(queries[i:i + batch_size], **kw).float(), dim=-1).cpu())
    return torch.cat(out)  # (B, D) on the CPU


@torch.no_grad()
def text_embeddings(model, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """Normalised Y-encoder embeddings (n, D)."""
    return torch.cat([F.normalize(model.encode_text(texts[i:i + batch_size]).float(), dim=-1).cpu()
                      for i in range(0, len(texts), batch_size)])


def zero_shot_scores(model, class_texts: list[str], pixel_values: torch.Tensor | None = None,
                     visual: torch.Tensor | None = None, query: str | None = None) -> torch.Tensor:
    """Cosine similarity (B, C) between each clip's predicted embedding and each class text."""
    return video_embeddings(model, pixel_values, visual, query) @ text_embeddings(model, class_texts).T


def zero_shot_classify(model, class_texts: list[str], pixel_values: torch.Tensor | None = None,
                       visual: torch.Tensor | None = None, query: str | None = None) -> torch.Tensor:
    """Predicted class index (B,) = nearest class-text embedding."""
    return zero_shot_scores(model, class_texts, pixel_values, visual, query).argmax(dim=1)


def multiple_choice(model, questions: list[str], candidates: list[list[str]],
                    pixel_values: torch.Tensor | None = None, visual: torch.Tensor | None = None) -> torch.Tensor:
    """Index (B,) of the candidate answer nearest to each clip's prediction under its question."""
    if len(questions) != len(candidates):
        raise ValueError(f"{len(questions)} questions but {len(candidates)} candidate lists")
    pred = video_embeddings(model, pixel_values, visual, query=list(questions))  # (B, D)
    choices = []
    for i, cands in enumerate(candidates):
        if not cands:
            raise ValueError(f"question {i} has no candidate answers")
        choices.append(int((text_embeddings(model, list(cands)) @ pred[i]).argmax()))
    return torch.tensor(choices, dtype=torch.long)


def retrieval_scores(model, captions: list[str], pixel_values: torch.Tensor | None = None,
                     visual: torch.Tensor | None = None, query: str | list[str] | None = None) -> torch.Tensor:
    """Text-to-video scores (n_text, n_video): caption embedding . clip predicted embedding."""
    return text_embeddings(model, captions) @ video_embeddings(model, pixel_values, visual, query).T


def recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, k: int = 1) -> float:
    """Fraction of rows whose top-k columns contain a relevant one. relevant: (n_text, n_video) bool."""
    topk = scores.topk(min(k, scores.shape[1]), dim=1).indices  # (n_text, k)
    return float(relevant.gather(1, topk).any(dim=1).float().mean())


def class_embeddings(model, class_names: list[str], templates: list[str] | tuple[str, ...] = ("{}",)
                     ) -> torch.Tensor:
    """Unit class embeddings (C, D): the mean of each class's unit template embeddings, renormalised."""
    if not templates or any("{}" not in t for t in templates):
        raise ValueError(f"templates {templates!r} must each contain '{{}}' where the class name goes")
    per_template = torch.stack([text_embeddings(model, [t.format(c) for c in class_names])
                                for t in templates])  # (n_templates, C, D)
    return F.normalize(per_template.mean(0), dim=-1)


def zero_shot_eval(model, class_names: list[str], labels: list[int], pixel_values: torch.Tensor | None = None,
                   visual: torch.Tensor | None = None, templates: tuple[str, ...] = ("{}",),
                   query: str | None = None, ks: tuple[int, ...] = (1, 5)) -> dict:
    """Zero-shot classification of clips (pixel_values (B, T, C, H, W) or visual tokens (B, N, Dx))."""
    clips = video_embeddings(model, pixel_values, visual, query)  # (B, D) unit
    return zero_shot_from_embeddings(clips, class_embeddings(model, class_names, templates), labels,
                                     class_names, ks)


def multiple_choice_accuracy(model, questions: list[str], candidates: list[list[str]], answers: list[int],
                             pixel_values: torch.Tensor | None = None,
                             visual: torch.Tensor | None = None) -> dict:
    """Accuracy (%) of picking the nearest candidate answer; answers are indices into each candidate list."""
    chosen = multiple_choice(model, questions, candidates, pixel_values, visual)
    correct = chosen.numpy() == np.asarray(answers)
    return {"accuracy": float(100 * correct.mean()), "n": len(answers), "chosen": chosen.tolist()}
