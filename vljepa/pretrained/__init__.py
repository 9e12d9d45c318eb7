"""Small pretrained X-encoders shipped inside the package, loadable by short name.

`tiny-vjepa2` (folder `tiny_vjepa2/`): the demo's tiny V-JEPA 2 X-encoder (hidden 64, 2 layers, 32 px,
8 frames; a Hugging Face `VJEPA2Model` folder), pretrained by V-JEPA self-supervised feature
prediction (`vljepa.pretrain`, recipe `recipes/vljepa/pretrain_tiny_cpu.yaml`, seed 0) on unlabeled
synthetic clips and real video windows; `pretraining.json` inside it records the config, the loss
and the collapse monitors, its README the command, the budget and the measured effect
(docs/vljepa.md, "V-JEPA pretraining of the X-encoder"). Any X-encoder path accepts the short name:

    from vljepa.modeling import load_x_encoder; load_x_encoder("tiny-vjepa2")
    python -m vljepa.demo --x-encoder pretrained          # the demo's pretrained arm uses it
"""

from __future__ import annotations

from jepa_common.shipped import shipped_folder

_FOLDERS = {"tiny-vjepa2": "tiny_vjepa2"}


def pretrained_names() -> list[str]:
    return sorted(_FOLDERS)


def pretrained_path(name: str) -> str | None:
    """Folder of the shipped X-encoder called `name`, or None when `name` is not a shipped model's name."""
    return shipped_folder(__name__, _FOLDERS, name)
