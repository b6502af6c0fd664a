from pathlib import Path

import pytest

from uniedit_synth.core.config import diff_views, load_pipeline, parse_pipeline, pipeline_hash
from uniedit_synth.core.errors import ConfigError


def test_default_pipeline_loads():
    config = load_pipeline("default")
    assert config.source.spec == "scenes"
    assert config.stages.edit.max_attempts >= 1


def test_unknown_key_is_named(tmp_path: Path):
    path = tmp_path / "p.yaml"
    text = Path("pipelines/default.yaml").read_text().replace("max_attempts: 2", "max_attempts: 2\n    max_atempts: 3")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(path))
    assert "stages.edit.max_atempts: unknown key" in str(err.value)


def test_bad_yaml_is_one_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nstages: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_pipeline(str(path))
    assert "not valid YAML" in str(err.value) and "line" in str(err.value)
    assert "\n" not in str(err.value)


def test_stage_must_name_a_defined_backend():
    raw = {
        "backends": {"t": {"type": "builtin", "model": "m"}},
        "stages": {s: {"backend": "t"} for s in ("classify", "rewrite", "edit")} | {"judge": {"backend": "nope"}},
    }
    with pytest.raises(ConfigError, match="stages.judge.backend 'nope' is not defined"):
        parse_pipeline(raw)


def test_unknown_pipeline_name_lists_builtin_ones():
    with pytest.raises(ConfigError, match="built-in pipelines: .*default"):
        load_pipeline("no-such-pipeline")


def test_hash_ignores_speed_settings_but_not_content():
    base = load_pipeline("default")
    faster = load_pipeline("default", {"engine": {"workers": 8}, "stages": {"edit": {"concurrency": 99}}, "limit": 5})
    stricter = load_pipeline("default", {"stages": {"judge": {"thresholds": {"coherence": 5}}}})
    assert pipeline_hash(base, {}) == pipeline_hash(faster, {})
    assert pipeline_hash(base, {}) != pipeline_hash(stricter, {})
    changes = diff_views(base.hashed_view(), stricter.hashed_view())
    assert changes == ["stages.judge.thresholds.coherence: 3.0 → 5.0"]


def test_set_a_mapping_under_a_key_the_pipeline_lacks():
    from uniedit_synth.cli import _overrides

    # default.yaml has no `limits:`; `--set` replaces mappings, and that must work where there is nothing to replace
    overrides = _overrides(settings=["limits.rate_limits={openai/gpt-4o: {rpm: 60}}"])
    config = load_pipeline("default", overrides)
    assert config.limits.rate_limits["openai/gpt-4o"].rpm == 60
