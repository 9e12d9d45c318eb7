"""Model folders shipped inside a package as package data, found by short name (importlib.resources,
so they load from an installed wheel as well as from a checkout).

    shipped_folder("llm_jepa.pretrained", {"mini-llama": "mini_llama"}, "mini-llama") -> ".../mini_llama"
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_folder(package: str, folders: dict[str, str], name: str) -> str | None:
    """Folder of the model `name` shipped in `package` (`folders`: short name -> subfolder), or None when
    `name` is not one of them. A shipped name whose files are missing is an error that says how to fix it."""
    folder = folders.get(name)
    if folder is None:
        return None
    path = Path(str(resources.files(package).joinpath(folder)))
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"the shipped model {name!r} is missing its files under {path}; reinstall the "
                                "package (its safetensors/json files are package data)")
    return str(path)
