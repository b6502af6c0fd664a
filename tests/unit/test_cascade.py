"""The judge cascade's routing and figures (cascade.py) and its config checks."""

from __future__ import annotations

import pytest

from uniedit_synth.core.config import load_pipeline
from uniedit_synth.core.errors import ConfigError
from uniedit_synth.method import cascade

BARS = {"instruction_following": 4, "visual_quality": 3, "coherence": 3}


def test_routes_by_margin_then_audit_draw() -> None:
    sure_pass = {"instruction_following": 5, "visual_quality": 5, "coherence": 5}
    unsure = {"instruction_following": 3, "visual_quality": 5, "coherence": 5}
    sure_fail = {"instruction_following": 1, "visual_quality": 5, "coherence": 5}
    assert cascade.margin(unsure, BARS) == -1
    assert cascade.route(unsure, BARS, (-1, 0), 0.05, 0.99) == "band"
    assert cascade.route(sure_pass, BARS, (-1, 0), 0.05, 0.99) == "cheap"
    assert cascade.route(sure_fail, BARS, (-1, 0), 0.05, 0.01) == "audit"
    assert cascade.passes(sure_pass, BARS) and not cascade.passes(unsure, BARS)


def test_audit_draw_is_seeded_and_near_the_share() -> None:
    draws = [cascade.audit_draw(0, f"r{i}", 0) for i in range(4000)]
    assert draws == [cascade.audit_draw(0, f"r{i}", 0) for i in range(4000)]
    assert 0.04 < sum(d < 0.05 for d in draws) / len(draws) < 0.06
    assert cascade.audit_draw(0, "r1", 0) != cascade.audit_draw(0, "r1", 1) != cascade.audit_draw(1, "r1", 0)


def test_counts_merge_into_figures() -> None:
    entry = {"thresholds": BARS, "cheap": {"instruction_following": 5, "visual_quality": 5, "coherence": 5}}
    entries = [
        {**entry, "route": "cheap", "decided_by": "cheap", "cheap_pass": True, "expensive": None},
        {**entry, "route": "audit", "decided_by": "expensive", "cheap_pass": True, "expensive_pass": False,
         "expensive": {"instruction_following": 2, "visual_quality": 5, "coherence": 5}},
        {**entry, "route": "band", "decided_by": "expensive", "cheap_pass": True, "expensive_pass": True,
         "expensive": entry["cheap"]},
    ]  # fmt: skip
    shard = cascade.shard_counts(entries, {"cheap": 0.01, "expensive": 0.2})
    total = cascade.figures(cascade.merge(cascade.merge({}, shard), shard))
    assert total["judged"] == 6 and total["expensive_calls"] == 4 and total["expensive_share"] == 0.6667
    assert total["audited"] == 2 and total["audit_agreement"] == 0.0 and total["band_agreement"] == 1.0
    assert total["confusion"]["instruction_following"] == {"cheap_pass/expensive_fail": 2}
    assert total["confusion"]["visual_quality"] == {"cheap_pass/expensive_pass": 2}
    assert total["cost_usd"] == {"cheap": 0.02, "expensive": 0.4}


def test_cascade_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="cascade starts with the cheap judge"):
        load_pipeline("default", {"stages": {"judge": {"cascade": ["editor", "text"]}}})
    with pytest.raises(ConfigError, match="cascade: backend 'nope' is not defined"):
        load_pipeline("default", {"stages": {"judge": {"cascade": ["text", "nope"]}}})
    with pytest.raises(ConfigError, match="two backends"):
        load_pipeline("default", {"stages": {"judge": {"cascade": ["text"]}}})
    with pytest.raises(ConfigError, match="preset: release"):
        load_pipeline("default", {"stages": {"judge": {"cascade": ["text", "text"], "preset": "release"}}})
    config = load_pipeline("default", {"stages": {"judge": {"cascade": ["text", "text"], "audit_share": 0.1}}})
    assert config.stages.judge.cascade == ["text", "text"] and config.stages.judge.cascade_band == (-1.0, 0.0)
