"""Numbers and shapes a pipeline may not hold are refused when it is loaded, with one line naming the key
(issue 30, items 7 and 9): NaN and out-of-scale thresholds, zero sizes, a zero budget, non-finite numbers
anywhere (run.json is JSON), keys nested thousands deep, and YAML too large to be a pipeline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from uniedit_synth.core.config import MAX_YAML_NODES, PipelineConfig, load_pipeline, load_yaml_text
from uniedit_synth.core.errors import ConfigError, UnsafeYAML


def refused(overrides: dict, *needles: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_pipeline("default", overrides)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


@pytest.mark.parametrize("bar", [math.nan, 7, -1, 5.5, math.inf, -math.inf])
def test_a_threshold_off_the_score_scale_is_refused(bar: float):
    refused({"stages": {"judge": {"thresholds": {"coherence": bar}}}}, "thresholds", "coherence")


def test_a_threshold_message_names_the_scale():
    refused({"stages": {"judge": {"thresholds": {"coherence": 7}}}}, "from 0 to 5")


@pytest.mark.parametrize("bar", [0, 1, 3, 4.5, 5])
def test_thresholds_on_the_scale_load(bar: float):
    config = load_pipeline("default", {"stages": {"judge": {"thresholds": {"coherence": bar}}}})
    assert config.stages.judge.thresholds["coherence"] == bar


@pytest.mark.parametrize("key, value", [("max_side", 0), ("max_side", -5), ("max_pixels", -1), ("max_pixels", 0),
                                        ("max_text_chars", 0), ("remote_timeout_s", 0), ("remote_max_bytes", 0)])
def test_input_bounds_must_be_positive(key: str, value: int):
    refused({"input": {key: value}}, f"input.{key}")


@pytest.mark.parametrize("budget", [0, 0.0, -1])
def test_a_budget_of_nothing_is_refused_not_spent_on_rejects(budget: float):
    refused({"limits": {"max_cost_usd": budget}}, "limits.max_cost_usd", "leave it out")


def test_a_small_budget_and_no_budget_load():
    assert load_pipeline("default", {"limits": {"max_cost_usd": 0.01}}).limits.max_cost_usd == 0.01
    assert load_pipeline("default", {"limits": {"max_cost_usd": None}}).limits.max_cost_usd is None


@pytest.mark.parametrize("where", [
    {"stages": {"judge": {"params": {"temperature": math.nan}}}},
    {"backends": {"text": {"options": {"x": [1.0, math.inf]}}}},
    {"prices": {"builtin-text": {"input_per_mtok": math.nan}}},
    {"engine": {"worker_resources": {"num_cpus": math.inf}}},
])
def test_no_nan_or_infinity_anywhere_in_a_config(where: dict):
    refused(where, "not a finite number")


def test_every_loaded_config_dumps_as_strict_json():
    config = load_pipeline("default", {"stages": {"judge": {"thresholds": {"coherence": 5}}}})
    json.dumps(config.model_dump(mode="json"), allow_nan=False)
    with pytest.raises(Exception, match="finite"):  # a config built in Python is held to it too
        PipelineConfig.model_validate({**config.model_dump(), "limits": {"max_cost_usd": math.nan}})


def test_a_key_nested_thousands_deep_is_one_line_not_a_recursion_error():
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node = node.setdefault("a", {})
    message = refused(deep, "nested more than")
    assert len(message) < 400


def test_overrides_must_be_a_mapping():
    from uniedit_synth.api import load_pipeline as api_load

    for bad in (3, "engine.kind=inline", [("engine", {})]):
        with pytest.raises(ConfigError, match="overrides"):
            api_load("default", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("type_name", [":X", "mod:", "a b:C", "pkg.mod:Cls:x", "pkg..mod:C", "1pkg:C"])
def test_a_plugin_type_of_the_wrong_shape_is_refused(type_name: str):
    refused({"backends": {"editor": {"type": type_name}}}, "backends.editor.type", "package.module:ClassName")


def test_a_plugin_type_of_the_right_shape_loads():
    config = load_pipeline("default", {"backends": {"editor": {"type": "examples.plugins.tint_editor:TintEditor"}}})
    assert config.backends["editor"].type == "examples.plugins.tint_editor:TintEditor"


# -- YAML too large to be a pipeline ---------------------------------------------------------------------
def big_pipeline(tmp_path: Path, items: int) -> Path:
    """The default pipeline with a long list and no aliases at all."""
    text = (Path(__file__).resolve().parents[2] / "pipelines" / "default.yaml").read_text()
    path = tmp_path / "big.yaml"
    path.write_text(text + "\nx_data:\n" + "".join(f"  - {i}\n" for i in range(items)))
    return path


def test_a_yaml_file_over_the_size_bound_is_refused_before_it_is_parsed(tmp_path: Path):
    path = big_pipeline(tmp_path, 1_000_000)  # ~10 MB: a minute and GBs to parse
    with pytest.raises(UnsafeYAML) as info:
        load_pipeline(str(path))
    assert "MB" in str(info.value) and "alias" not in str(info.value)


def test_a_large_yaml_without_aliases_is_not_called_an_alias_bomb():
    text = "x:\n" + "".join(f"  - {i}\n" for i in range(MAX_YAML_NODES + 10))  # under the size bound
    with pytest.raises(UnsafeYAML) as info:
        load_yaml_text(text, "big.yaml")
    assert "alias" not in str(info.value) and "YAML nodes" in str(info.value)


def test_an_alias_bomb_is_still_named_as_one():
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, 12)]
    with pytest.raises(UnsafeYAML, match="alias bomb"):
        load_yaml_text("\n".join(lines), "bomb.yaml")


def test_a_fifo_as_pipeline_is_refused_not_waited_on(tmp_path: Path):
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_pipeline(str(fifo))
