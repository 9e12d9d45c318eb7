"""Tests of vljepa.masking: V-JEPA multi-block 3-D masks, padded instead of trimmed.

    pytest tests/test_masking.py
"""

from __future__ import annotations

import pytest
import torch

from vljepa.masking import MaskSpec, block_size, multiblock_masks, pad_rows, paper_mask_specs


def _rows(ids: torch.Tensor, valid: torch.Tensor) -> list[set[int]]:
    return [set(i[v].tolist()) for i, v in zip(ids, valid)]


def test_paper_masks_span_all_time_and_partition_the_grid():
    grid = (8, 14, 14)  # V-JEPA ViT-L: 16 frames / tubelet 2, 224 px / 16 px patches
    gen = torch.Generator().manual_seed(0)
    m = multiblock_masks(grid, 6, paper_mask_specs(), gen)
    assert m.context.shape[0] == m.target.shape[0] == 12 and m.spec.tolist() == [0] * 6 + [1] * 6
    n = 8 * 14 * 14
    for ctx, tgt in zip(_rows(m.context, m.context_valid), _rows(m.target, m.target_valid)):
        assert not ctx & tgt and ctx | tgt == set(range(n))  # disjoint, and together every token
        spatial = {i % 196 for i in tgt}
        # temporal scale 1.0: a masked spatial position is masked in every one of the 8 time steps
        assert tgt == {t * 196 + s for t in range(8) for s in spatial}
    frac_short = (m.target_valid[:6].sum(1) / n).mean()
    frac_long = (m.target_valid[6:].sum(1) / n).mean()
    # 8 blocks at 0.15 cover ~70 %, 2 blocks at 0.7 ~90 % (the paper's "about 90 %" masking)
    assert 0.55 < frac_short < 0.85 and 0.8 < frac_long < 0.99, (frac_short, frac_long)


def test_rows_are_padded_not_trimmed():
    gen = torch.Generator().manual_seed(3)
    m = multiblock_masks((4, 4, 4), 16, [MaskSpec(2, [0.15, 0.15])], gen)
    counts = m.target_valid.sum(1)
    assert counts.min() < counts.max()  # variable counts per clip ...
    longest = int(counts.argmax())
    # ... and the longest row keeps all of its ids, including the last time step (ids >= 48)
    assert m.target.shape[1] == counts.max() and (m.target[longest] >= 48).any()
    assert (m.target[~m.target_valid] == 0).all() and (m.context[~m.context_valid] == 0).all()
    assert m.context_valid.sum(1).add(counts).eq(64).all()


def test_block_size_follows_scale_and_aspect_ratio():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        t, h, w = block_size((8, 14, 14), MaskSpec(1, [0.7, 0.7], aspect_ratio=[0.75, 1.5]), gen)
        assert t == 8 and 0.55 < h * w / 196 < 0.85 and 0.5 < h / w < 2.0


def test_pad_rows():
    ids, valid = pad_rows([torch.tensor([3, 1]), torch.tensor([5]), torch.tensor([7, 8, 9])])
    assert ids.tolist() == [[3, 1, 0], [5, 0, 0], [7, 8, 9]]
    assert valid.sum(1).tolist() == [2, 1, 3]


def test_bad_specs_are_clear_errors():
    with pytest.raises(ValueError, match="spatial_scale"):
        MaskSpec(1, [0.5, 1.5])
    with pytest.raises(ValueError, match="num_blocks"):
        MaskSpec(0)
    with pytest.raises(ValueError, match="whole"):  # one block over the full grid leaves no context
        multiblock_masks((2, 2, 2), 1, [MaskSpec(1, [1.0, 1.0], aspect_ratio=[1.0, 1.0])], torch.Generator())
    with pytest.raises(ValueError, match="MaskSpec"):
        multiblock_masks((2, 2, 2), 1, [], torch.Generator())
