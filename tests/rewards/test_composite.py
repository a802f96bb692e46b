"""The composite reward with model-free scorers: the formulas by hand, failures, groups, config files, the runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from conftest import tone

from evalsuite.inputs import load_items
from evalsuite.scoring import score_items
from rewards.base import Sample, Score, ScorerInfo
from rewards.composite import Component, CompositeConfig, CompositeScorer, genemotion, to_unit, zscores
from rewards.loudness import LoudnessScorer
from rewards.models import ModelUnavailableError

META = f"{__name__}:MetaScorer"


class MetaScorer:
    """Reads its numbers from ``sample.meta``: value = meta[field], metric m = meta[f"{field}_{m}"].

    Raises on a batch holding a sample with ``meta["explode"]``; logs every call in ``MetaScorer.calls``.
    """

    name = "meta"
    version = "1"
    higher_is_better = True
    calls: list[tuple[str, list[str]]] = []

    def __init__(self, field: str = "a", requires: tuple[str, ...] = (), sample_rate: int | None = None):
        self.field = field
        self.requires = frozenset(requires)
        if sample_rate is not None:
            self.sample_rate = sample_rate
        self.loaded = False

    def prepare(self) -> None:
        self.loaded = True

    def score(self, samples):
        MetaScorer.calls.append((self.field, [s.id for s in samples]))
        if any(s.meta.get("explode") for s in samples):
            raise RuntimeError("kaboom")
        out = []
        for s in samples:
            prefix = self.field + "_"
            metrics = {k[len(prefix):]: v for k, v in s.meta.items() if k.startswith(prefix)}
            value = s.meta.get(self.field)
            out.append(Score(value, metrics) if value is not None else Score.failed(f"no {self.field}", **metrics))
        return out

    def info(self):
        # model_id resolves on loading, as asr's does
        settings = {"field": self.field, "model_id": "resolved" if self.loaded else "default"}
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, settings)


class MissingModelScorer(MetaScorer):
    def score(self, samples):
        raise ModelUnavailableError("weights not found")


@pytest.fixture(autouse=True)
def _reset_calls():
    MetaScorer.calls.clear()


def item(id: str, **meta) -> Sample:
    return Sample(id=id, meta=meta)


def comp(field: str, **kw) -> Component:
    return Component(scorer=META, kwargs={"field": field}, name=kw.pop("name", field), **kw)


def composite(*components: Component, **config) -> CompositeScorer:
    return CompositeScorer(CompositeConfig(components=components, **config))


# -- formulas --------------------------------------------------------------------------------------------------
def test_weighted_mean_exact_and_breakdown():
    scorer = composite(comp("a", weight=1), comp("b", weight=3))
    (s,) = scorer.score([item("x", a=0.2, b=0.8)])
    assert s.value == pytest.approx((1 * 0.2 + 3 * 0.8) / 4) and s.error is None
    assert s.metrics == {"a": 0.2, "a.raw": 0.2, "b": 0.8, "b.raw": 0.8, "weights_used": {"a": 0.25, "b": 0.75}}


def test_product_exact_with_weights_as_exponents():
    (s,) = composite(comp("a"), comp("b"), combine="product").score([item("x", a=0.5, b=0.8)])
    assert s.value == pytest.approx(0.4)
    (s,) = composite(comp("a", weight=2), comp("b"), combine="product").score([item("x", a=0.5, b=0.8)])
    assert s.value == pytest.approx(0.5**2 * 0.8) and s.metrics["weights_used"] == {"a": 2.0, "b": 1.0}


def test_range_mapping_clips_and_invert():
    scorer = composite(comp("mos", range=(1, 5)), comp("wer", range=(0, 1), invert=True))
    good, off_scale = scorer.score([item("x", mos=4.0, wer=0.25), item("y", mos=6.0, wer=1.5)])
    assert (good.metrics["mos"], good.metrics["wer"]) == (pytest.approx(0.75), pytest.approx(0.75))
    assert good.value == pytest.approx(0.75)
    assert (off_scale.metrics["mos"], off_scale.metrics["wer"]) == (1.0, 0.0)
    assert (off_scale.metrics["mos.raw"], off_scale.metrics["wer.raw"]) == (6.0, 1.5)
    assert to_unit(0.3, None, invert=True) == pytest.approx(0.7)


def test_value_outside_unit_without_range_is_that_items_error():
    ok, bad = composite(comp("a")).score([item("x", a=0.5), item("y", a=1.7)])
    assert ok.value == 0.5 and ok.error is None
    assert bad.value is None and bad.metrics["a"] is None and bad.metrics["a.raw"] == 1.7
    assert "a: value 1.7 is outside [0, 1]" in bad.error and bad.metrics["weights_used"] is None


def test_metric_of_a_scorer_and_a_missing_metric():
    scorer = composite(comp("a", metric="wer", range=(0, 1), invert=True, name="a.wer"))
    good, no_metric = scorer.score([item("x", a=0.9, a_wer=0.1), item("y", a=0.9)])
    assert good.value == pytest.approx(0.9) and good.metrics["a.wer.raw"] == 0.1
    assert no_metric.value is None and "no metric 'wer'" in no_metric.error


# -- failures --------------------------------------------------------------------------------------------------
def test_failed_required_component_gives_none_naming_it():
    scorer = composite(comp("a"), comp("b"))
    (s,) = scorer.score([item("x", a=0.5)])
    assert s.value is None and s.error == "b: no b"
    assert s.metrics["a"] == 0.5 and s.metrics["b"] is None and s.metrics["b.raw"] is None


def test_failed_optional_component_is_dropped_and_weights_renormalised():
    (s,) = composite(comp("a", weight=1), comp("b", weight=3, required=False)).score([item("x", a=0.2)])
    assert s.value == pytest.approx(0.2) and s.metrics["weights_used"] == {"a": 1.0}
    assert s.error == "b (optional, dropped): no b"
    # product: the exponents of what scored are rescaled to the full degree, here 4 / 2
    scorer = composite(comp("a"), comp("b"), comp("c", weight=2, required=False), combine="product")
    (s,) = scorer.score([item("x", a=0.5, b=0.8)])
    assert s.metrics["weights_used"] == {"a": 2.0, "b": 2.0}
    assert s.value == pytest.approx(0.5**2 * 0.8**2)


def test_all_optional_failed_gives_none():
    (s,) = composite(comp("a", required=False), comp("b", required=False)).score([item("x")])
    assert s.value is None and "no component could be scored" in s.error


def test_missing_input_fails_that_component_and_requires_counts_required_ones():
    scorer = CompositeScorer(CompositeConfig(components=(
        Component(META, {"field": "a", "requires": ("text",)}, name="a"),
        Component(META, {"field": "b", "requires": ("audio",)}, name="b", required=False),
    )))
    assert scorer.requires == frozenset({"text"})
    (s,) = scorer.score([Sample(id="x", text="hi", meta={"a": 0.4, "b": 0.9})])
    assert s.value == 0.4 and s.error == "b (optional, dropped): missing input: audio"


def test_a_raising_batch_is_retried_item_by_item():
    scorer = composite(comp("a"))
    ok, bad = scorer.score([item("x", a=0.5), item("y", a=0.5, explode=True)])
    assert ok.value == 0.5 and bad.value is None and bad.error == "a: RuntimeError: kaboom"


def test_missing_model_propagates():
    scorer = CompositeScorer(CompositeConfig(components=(Component(f"{__name__}:MissingModelScorer"),)))
    with pytest.raises(ModelUnavailableError):
        scorer.score([item("x", a=0.5)])


# -- z-score ---------------------------------------------------------------------------------------------------
def test_zscore_within_groups_by_hand():
    scorer = composite(comp("a", weight=1), comp("b", weight=1, invert=True), normalize="zscore")
    samples = [
        item("p1", group="g1", a=1.0, b=0.5), item("p2", group="g1", a=2.0, b=0.5),
        item("q1", group="g2", a=9.0, b=0.1),
        item("p3", group="g1", a=4.0, b=0.8),
        item("orphan", a=1.0, b=0.5),
    ]
    p1, p2, q1, p3, orphan = scorer.score(samples)
    # g1, a: mean 7/3, population std sqrt(14)/3
    std_a = math.sqrt(14) / 3
    za = [(v - 7 / 3) / (std_a + 1e-6) for v in (1.0, 2.0, 4.0)]
    # g1, b inverted: 1 - b = 0.5, 0.5, 0.2: mean 0.4, std sqrt(0.02)
    zb = [(v - 0.4) / (math.sqrt(0.02) + 1e-6) for v in (0.5, 0.5, 0.2)]
    for s, a, b in zip((p1, p2, p3), za, zb):
        assert s.metrics["a"] == pytest.approx(a) and s.metrics["b"] == pytest.approx(b)
        assert s.value == pytest.approx((a + b) / 2) and s.metrics["group_size"] == 3
    assert p3.metrics["a.raw"] == 4.0 and p3.metrics["b.raw"] == 0.8
    assert (q1.value, q1.metrics["a"], q1.metrics["b"], q1.metrics["group_size"]) == (0.0, 0.0, 0.0, 1)
    assert orphan.value is None and "sample.meta['group'] is missing" in orphan.error
    assert orphan.metrics["a.raw"] == 1.0


def test_zscore_uses_only_items_that_scored_and_a_custom_group_key():
    scorer = composite(comp("a"), comp("b", required=False), normalize="zscore", group_key="prompt_id")
    s1, s2 = scorer.score([item("1", prompt_id=7, a=1.0, b=0.3), item("2", prompt_id=7, a=3.0)])
    assert s1.metrics["b"] == 0.0  # the only item of the group with b
    assert s1.metrics["a"] == pytest.approx(-1 / (1 + 1e-6)) and s2.metrics["a"] == pytest.approx(1 / (1 + 1e-6))
    assert s2.value == pytest.approx(s2.metrics["a"]) and s2.metrics["weights_used"] == {"a": 1.0}
    assert zscores([5.0], 1e-6) == [0.0] and zscores([2.0, 2.0], 1e-6) == [0.0, 0.0]


# -- sharing, info, config -------------------------------------------------------------------------------------
def test_a_shared_scorer_runs_once_per_batch():
    scorer = composite(comp("a"), comp("a", metric="wer", range=(0, 1), invert=True, name="a.wer"), comp("b"))
    scorer.score([item("x", a=0.5, a_wer=0.2, b=1.0), item("y", a=0.4, a_wer=0.1, b=0.0)])
    assert sorted(MetaScorer.calls) == [("a", ["x", "y"]), ("b", ["x", "y"])]
    # a registry name and the import path it stands for are the same scorer
    loud = composite(Component("loudness"), Component("rewards.loudness:LoudnessScorer", metric="peak_dbfs"))
    assert loud.component_scorer("loudness") is loud.component_scorer("loudness.peak_dbfs")


def test_info_records_config_and_components():
    config = CompositeConfig(components=(comp("a", weight=0.3), comp("b", range=(1, 5), weight=0.7)), combine="product")
    scorer = CompositeScorer(config)
    info = scorer.info().as_dict()
    assert info["name"] == "composite" and info["higher_is_better"] is True
    settings = info["settings"]
    assert CompositeConfig.from_dict({k: settings[k] for k in ("components", "normalize", "combine", "group_key",
                                                                "eps")}) == config
    assert settings["components"][1] == {"scorer": META, "kwargs": {"field": "b"}, "metric": None, "weight": 0.7,
                                         "range": [1.0, 5.0], "invert": False, "required": True, "name": "b"}
    assert settings["versions"] == {"a": "1", "b": "1"}
    assert settings["components_info"]["b"]["settings"]["field"] == "b"
    json.dumps(info)  # goes into run.json as it is


def test_prepare_and_sample_rate():
    scorer = CompositeScorer(CompositeConfig(components=(
        Component(META, {"field": "a", "requires": ("audio",), "sample_rate": 16000}, name="a"),
        Component("loudness"),
    )))
    assert scorer.sample_rate == 16000  # loudness takes any rate
    scorer.prepare()
    assert scorer.component_scorer("a").loaded


def test_default_names():
    assert Component("asr").name == "asr"
    assert Component("asr", metric="wer_consistency").name == "asr.wer_consistency"
    assert Component("rewards.loudness:LoudnessScorer").name == "loudness"


@pytest.mark.parametrize("config, message", [
    ({"components": [{"scorer": "loudness", "wieght": 1}]},
     r"components\[0\]: unknown key 'wieght'; did you mean 'weight'\?"),
    ({"components": [{"scorer": "loudness"}], "combin": "product"}, "unknown key 'combin'; did you mean 'combine'"),
    ({"components": [{"weight": 1}]}, r"components\[0\]: 'scorer' is required"),
    ({"normalize": "unit"}, "'components' is required"),
    ({"components": [{"scorer": "loudness", "weight": -1}]}, "weight must be a finite number ≥ 0"),
    ({"components": [{"scorer": "loudness", "weight": 0}]}, "weights sum to 0"),
    ({"components": [{"scorer": "loudness", "range": [5, 1]}]}, "range must be"),
    ({"components": [{"scorer": "loudness"}, {"scorer": "loudness"}]}, "repeated: loudness"),
    ({"components": [{"scorer": "loudness", "name": "weights_used"}]}, "reserved"),
    ({"components": [{"scorer": "loudness"}], "normalize": "zscore", "combine": "product"}, "needs normalize 'unit'"),
    ({"components": [{"scorer": "loudness"}], "combine": "sum"}, "combine must be one of"),
])
def test_from_dict_rejects_bad_configs_clearly(config, message):
    with pytest.raises(ValueError, match=message):
        CompositeScorer.from_dict(config)


def test_from_yaml(tmp_path):
    path = tmp_path / "reward.yaml"
    path.write_text(
        "components:\n"
        "  - {scorer: asr, weight: 0.3}\n"
        "  - {scorer: quality, metric: dnsmos_ovrl, range: [1, 5], weight: 0.2, kwargs: {backends: [dnsmos]}}\n"
        "  - {scorer: asr, metric: wer_reference, range: [0, 1], invert: true, weight: 0.5, required: false}\n"
        "normalize: unit\ncombine: weighted_mean\neps: 1e-6\n"
    )
    config = CompositeScorer.from_yaml(path).config
    assert [c.name for c in config.components] == ["asr", "quality.dnsmos_ovrl", "asr.wer_reference"]
    assert config.components[1].range == (1.0, 5.0) and config.components[1].kwargs == {"backends": ["dnsmos"]}
    assert config.components[2].invert and not config.components[2].required and config.eps == 1e-6
    path.write_text("components:\n  - {scorer: asr, metrc: wer_reference}\n")
    with pytest.raises(ValueError, match=r"reward\.yaml: .*unknown key 'metrc'; did you mean 'metric'"):
        CompositeScorer.from_yaml(path)
    path.write_text("- just a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        CompositeScorer.from_yaml(path)


def test_genemotion_is_p_target_times_one_minus_wer():
    config = genemotion(META, emotion_kwargs={"field": "p"}, asr_scorer=META, asr_kwargs={"field": "asr"})
    scorer = CompositeScorer(config)
    good, garbled, no_reference = scorer.score([
        item("x", p=0.8, asr=1.0, asr_wer_reference=0.25),
        item("y", p=0.9, asr=0.0, asr_wer_reference=1.4),
        item("z", p=0.9, asr=0.5, asr_wer_reference=None),
    ])
    assert good.value == pytest.approx(0.8 * 0.75) and good.metrics["wer.raw"] == 0.25
    assert garbled.value == 0.0
    assert no_reference.value is None and "wer: wer_reference is None" in no_reference.error


# -- through the runner ----------------------------------------------------------------------------------------
def test_through_the_runner_with_loudness(tmp_path):
    root = tmp_path / "tones"
    root.mkdir()
    for k, amp in enumerate((0.05, 0.2, 0.6)):
        sf.write(root / f"t{k}.wav", tone(0.5, amp=amp), 16000)
    scorer = CompositeScorer.from_dict({"components": [
        {"scorer": "loudness", "range": [-60, 0], "name": "level"},
        {"scorer": "loudness", "metric": "peak_dbfs", "range": [-60, 0], "weight": 3, "name": "peak"},
    ]})
    result = score_items(load_items(root), [LoudnessScorer(), scorer], tmp_path / "out", progress=False)
    rows = [json.loads(line) for line in (result.out_dir / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    for row in rows:
        level = (row["loudness.value"] + 60) / 60
        peak = (row["loudness.peak_dbfs"] + 60) / 60
        assert row["composite.level.raw"] == row["loudness.value"]
        assert row["composite.level"] == pytest.approx(level) and row["composite.peak"] == pytest.approx(peak)
        assert row["composite.value"] == pytest.approx((level + 3 * peak) / 4)
        assert row["composite.weights_used"] == {"level": 0.25, "peak": 0.75} and row["composite.error"] is None
    header = (result.out_dir / "scores.csv").read_text().splitlines()[0].split(",")
    assert {"composite.value", "composite.level", "composite.peak", "composite.error"} <= set(header)
    assert result.summary["metrics"]["composite.value"]["n_scored"] == 3
    values = [r["composite.value"] for r in rows]
    assert values == sorted(values) and np.all(np.diff(values) > 0)  # louder tones score higher


def test_runner_resumes_although_component_models_resolve_on_loading(tmp_path):
    root = tmp_path / "tones"
    root.mkdir()
    for k in range(3):
        sf.write(root / f"t{k}.wav", tone(0.5), 16000)
    items = load_items(root)

    def make():
        return CompositeScorer.from_dict({"components": [
            {"scorer": "loudness", "range": [-60, 0]},
            {"scorer": META, "kwargs": {"field": "a"}, "required": False, "name": "a"},
        ]})

    score_items(items[:2], [make()], tmp_path / "out", progress=False)
    result = score_items(items, [make()], tmp_path / "out", progress=False)
    assert result.n_resumed == 2 and result.n_scored_now == 1
