"""Tests for the shared typed-config system (jepa_common.config)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import pytest

from jepa_common.config import ConfigError, load_config, save_config, to_dict


class Dist(enum.Enum):
    COSINE = "cosine"
    L2 = "l2"


@dataclass
class Inner:
    lam: float = 1.0
    """weight of the term"""
    dist: Dist = Dist.COSINE
    layers: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Outer:
    name: str = "run"
    steps: int = 10
    flag: bool = False
    path: str | None = None
    inner: Inner = field(default_factory=Inner)


def test_defaults_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps: 20\ninner:\n  lam: 0.5\n")
    cfg = load_config(Outer, recipe, ["inner.dist=l2", "flag=true", "inner.layers=[3,4]"])
    assert cfg.steps == 20 and cfg.inner.lam == 0.5 and cfg.inner.dist is Dist.L2
    assert cfg.flag is True and cfg.inner.layers == [3, 4] and cfg.name == "run"


def test_unknown_key_names_key_and_valid_ones(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['lamda'\].*valid keys are: \['dist', 'lam', 'layers'\]"):
        load_config(Outer, None, ["inner.lamda=2"])


def test_bad_enum_and_type_errors():
    with pytest.raises(ConfigError, match="not one of: cosine, l2"):
        load_config(Outer, None, ["inner.dist=kl"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(Outer, None, ["steps=abc"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config(Outer, None, ["steps=1.5"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(Outer, None, ["steps"])


def test_missing_recipe_is_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_save_load_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["inner.dist=l2", "path=/x", "steps=7"])
    path = save_config(cfg, tmp_path / "run" / "config.yaml")
    again = load_config(Outer, path)
    assert again == cfg
    assert to_dict(again)["inner"]["dist"] == "l2"
