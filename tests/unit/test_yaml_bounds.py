"""Pipeline YAML is loaded with alias expansion bounded: ordinary anchors work, alias bombs and absurd nesting
are refused before anything is built from them."""

from __future__ import annotations

import pytest

from uniedit_synth.core.config import MAX_YAML_NODES, load_yaml_text
from uniedit_synth.core.errors import ConfigError, UnsafeYAML


def test_ordinary_anchors_and_merge_keys_still_work():
    text = "base: &base {model: m, timeout_s: 5}\nother:\n  <<: *base\n  model: n\nlist: [*base, *base]\n"
    data = load_yaml_text(text, "t.yaml")
    assert data["other"] == {"model": "n", "timeout_s": 5}
    assert data["list"] == [{"model": "m", "timeout_s": 5}] * 2


def test_alias_bomb_is_refused_before_it_is_expanded():
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 12)]
    with pytest.raises(UnsafeYAML, match=f"more than {MAX_YAML_NODES}"):
        load_yaml_text("\n".join(lines), "bomb.yaml")


def test_deep_nesting_is_refused():
    with pytest.raises(UnsafeYAML, match="nested too deeply"):
        load_yaml_text("[" * 50_000 + "]" * 50_000, "deep.yaml")


def test_invalid_yaml_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="line 1, column"):
        load_yaml_text("a: [1, 2", "bad.yaml")


def test_a_pipeline_limit_applies_only_to_its_own_source():
    from uniedit_synth.core.config import load_pipeline

    assert load_pipeline("default").limit == 300  # the endless offline world
    assert load_pipeline("default", {"source": {"spec": "scenes"}}).limit == 300
    assert load_pipeline("default", {"source": {"spec": "vqa.jsonl"}}).limit is None
    assert load_pipeline("default", {"source": {"spec": "vqa.jsonl"}, "limit": 20}).limit == 20
