"""V-JEPA multi-block 3-D masking on a (T', H', W') token grid, with padding instead of trimming.

V-JEPA (Bardes et al. 2024, section 3.2 "multi-block masking"; V-JEPA 2 keeps it) hides the
union of several spatial blocks, each extended through *all* time steps (temporal scale 1.0),
and asks the predictor to recover the features of the hidden tokens from the visible rest.
The paper's two mask types, one loss term each:

- short-range: 8 blocks at spatial scale 0.15, aspect ratio 0.75-1.5;
- long-range:  2 blocks at spatial scale 0.7,  aspect ratio 0.75-1.5;

together about 90 % of the tokens are targets. As in the reference collator, the block *size*
is drawn once per batch and mask type, the block *positions* per clip, and a clip whose union
leaves no context is redrawn.

Data flow:

    grid (T', H', W'), batch B, [MaskSpec, ...], torch.Generator
      -> per clip and spec: union of blocks (bool (T', H', W')) -> target ids / context ids
      -> padded to the longest row: MaskBatch(context (S*B, Kc), context_valid (S*B, Kc),
                                             target (S*B, Kt), target_valid (S*B, Kt), spec (S*B,))

The reference collator cuts every row to the batch minimum, which drops ids from the *end*, i.e.
the last time steps; we keep every id and carry boolean validity masks (`*_valid`) instead, so
attention and the loss simply ignore padded slots (vljepa.pretrain).

    masks = multiblock_masks((4, 4, 4), 32, [MaskSpec(8, [0.15, 0.15]), MaskSpec(2, [0.7, 0.7])], gen)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class MaskSpec:
    """One V-JEPA mask type: `num_blocks` blocks whose union is the prediction target."""

    num_blocks: int = 8
    spatial_scale: list[float] = field(default_factory=lambda: [0.15, 0.15])  # [min, max] fraction of H'*W'
    temporal_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # [min, max] fraction of T'
    aspect_ratio: list[float] = field(default_factory=lambda: [0.75, 1.5])  # [min, max] block height / width

    def __post_init__(self) -> None:
        if self.num_blocks < 1:
            raise ValueError(f"MaskSpec.num_blocks={self.num_blocks}: need at least one block")
        for name in ("spatial_scale", "temporal_scale", "aspect_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi or (name != "aspect_ratio" and hi > 1):
                raise ValueError(f"MaskSpec.{name}={[lo, hi]}: need 0 < min <= max"
                                 + ("" if name == "aspect_ratio" else " <= 1"))


def paper_mask_specs() -> list[MaskSpec]:
    """V-JEPA / V-JEPA 2 pretraining masks: 8 short-range blocks (0.15) + 2 long-range blocks (0.7)."""
    return [MaskSpec(8, [0.15, 0.15]), MaskSpec(2, [0.7, 0.7])]


@dataclass
class MaskBatch:
    """Padded token ids of S mask types x B clips (row r belongs to spec r // B, clip r % B)."""

    context: torch.Tensor  # (S*B, Kc) long, padded with 0
    context_valid: torch.Tensor  # (S*B, Kc) bool
    target: torch.Tensor  # (S*B, Kt) long, padded with 0
    target_valid: torch.Tensor  # (S*B, Kt) bool
    spec: torch.Tensor  # (S*B,) long: index of the MaskSpec (= the predictor's mask token)

    def target_fraction(self) -> float:
        """Mean fraction of the grid that is target (what V-JEPA calls the masking ratio)."""
        n_ctx, n_tgt = self.context_valid.sum(1), self.target_valid.sum(1)  # (S*B,)
        return float((n_tgt / (n_ctx + n_tgt)).mean())


def _uniform(lo_hi: list[float], gen: torch.Generator) -> float:
    lo, hi = lo_hi
    return lo + float(torch.rand(1, generator=gen)) * (hi - lo)


def block_size(grid: tuple[int, int, int], spec: MaskSpec, gen: torch.Generator) -> tuple[int, int, int]:
    """(t, h, w) of one block: scale of the area and aspect ratio drawn from the spec's ranges."""
    depth, height, width = grid
    t = max(1, int(depth * _uniform(spec.temporal_scale, gen)))
    area = height * width * _uniform(spec.spatial_scale, gen)
    ratio = _uniform(spec.aspect_ratio, gen)
    h = min(height, max(1, round(math.sqrt(area * ratio))))
    w = min(width, max(1, round(math.sqrt(area / ratio))))
    return t, h, w


def block_union(grid: tuple[int, int, int], size: tuple[int, int, int], num_blocks: int,
                gen: torch.Generator) -> torch.Tensor:
    """Union of `num_blocks` blocks of `size` at random positions: bool (T', H', W'), True = target."""
    depth, height, width = grid
    t, h, w = size
    masked = torch.zeros(grid, dtype=torch.bool)
    for _ in range(num_blocks):
        start = int(torch.randint(0, depth - t + 1, (1,), generator=gen))
        top = int(torch.randint(0, height - h + 1, (1,), generator=gen))
        left = int(torch.randint(0, width - w + 1, (1,), generator=gen))
        masked[start:start + t, top:top + h, left:left + w] = True
    return masked


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length 1-D id tensors -> (ids (R, K) padded with 0, valid (R, K) bool)."""
    length = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    valid = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
        valid[i, :len(r)] = True
    return ids, valid


def multiblock_masks(grid: tuple[int, int, int], batch: int, specs: list[MaskSpec],
                     gen: torch.Generator, max_tries: int = 100) -> MaskBatch:
    """Context / target ids of every clip for every mask spec; token order is (t, h, w) row-major."""
    if not specs:
        raise ValueError("no mask specs: pass at least one MaskSpec (paper_mask_specs() for V-JEPA's)")
    ctx, tgt, which = [], [], []
    for s, spec in enumerate(specs):
        size = block_size(grid, spec, gen)
        for _ in range(batch):
            for _ in range(max_tries):
                masked = block_union(grid, size, spec.num_blocks, gen).flatten()  # (T'*H'*W',)
                if not masked.all():
                    break
            else:
                raise ValueError(f"{spec} masks the whole {grid} grid in {max_tries} draws; "
                                 "lower spatial_scale or num_blocks so some context stays visible")
            tgt.append(masked.nonzero().flatten())
            ctx.append((~masked).nonzero().flatten())
            which.append(s)
    context, context_valid = pad_rows(ctx)
    target, target_valid = pad_rows(tgt)
    return MaskBatch(context, context_valid, target, target_valid, torch.tensor(which))
