"""The built-in benchmark definitions: each parses, and each VoiceBench one maps its subset's real layout to items."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalsuite.benchmark import definitions_dir, read_benchmark
from evalsuite.data import data_dir, item_audio, load_rows, split_label, to_items
from rewards.emotion import DEFAULT_ALIASES
from rewards.prosody import STYLES
from rewards.registry import SCORERS

ROOT = Path(__file__).resolve().parents[2]
VOICEBENCH = ROOT / "tests" / "data" / "voicebench"
DEFINITIONS = sorted(definitions_dir().glob("*.yaml"))
SUBSETS = ["alpacaeval", "alpacaeval_full", "commoneval", "wildvoice", "sd-qa", "openbookqa", "mmsu", "bbh",
           "ifeval", "advbench"]
RULE_SCORERS = {"mcq", "yesno", "refusal", "bbh", "ifeval"}  # rewards/rules.py
MMSU_DOMAINS = ["biology", "business", "chemistry", "economics", "engineering", "health", "history", "law", "other",
                "philosophy", "physics", "psychology"]


def voicebench(subset: str):
    return read_benchmark(definitions_dir() / f"voicebench-{subset}.yaml")


@pytest.mark.parametrize("path", DEFINITIONS, ids=lambda p: p.stem)
def test_definition_parses(path):
    benchmark = read_benchmark(path)
    assert benchmark.name == path.stem
    assert benchmark.description and benchmark.metrics and benchmark.scorers
    assert benchmark.primary in [m.name for m in benchmark.metrics]
    assert benchmark.source.get("hf") or benchmark.source.get("local")
    for scorer in benchmark.scorers:
        assert scorer.name in set(SCORERS) | RULE_SCORERS, scorer.name


def test_voicebench_suite_is_the_leaderboards_nine_subsets():
    names = {p.stem for p in DEFINITIONS if p.stem.startswith("voicebench-")}
    assert names == {f"voicebench-{s}" for s in SUBSETS}
    suite = {p.stem for p in DEFINITIONS if read_benchmark(p).suite == "voicebench"}
    # alpacaeval (199) is part of alpacaeval_full (636), which the leaderboard uses: in the suite once only
    assert suite == names - {"voicebench-alpacaeval"}
    for subset in SUBSETS:
        benchmark = voicebench(subset)
        assert benchmark.source["hf"] == "hlt-lab/voicebench" and benchmark.source["subset"] == subset
        primary = benchmark.metric(benchmark.primary)
        # every primary is on VoiceBench's 0-100 overall scale: 1-5 judge scores x20, fractions x100
        if subset == "ifeval":  # the mean of the four IFEval accuracies, each x100
            assert len(primary.mean_of) == 4
            assert all(benchmark.metric(m).scale == 100.0 for m in primary.mean_of)
        else:
            assert (primary.column, primary.scale) in {("judge.score", 20.0),
                                                       (f"{primary.column.split('.')[0]}.value", 100.0)}
        assert primary.higher_is_better


@pytest.mark.parametrize("subset", SUBSETS)
def test_voicebench_definition_maps_its_fixture(subset):
    """The definition's fields turn rows in the Hub's layout (tests/data/voicebench) into complete items."""
    benchmark = voicebench(subset)
    for data in (VOICEBENCH, VOICEBENCH / subset):  # the dataset's root or the subset's folder
        rows, where = load_rows(benchmark.source, data=data, base_dir=benchmark.base_dir)
        items = to_items(rows, benchmark.fields, split_name=split_label(benchmark.source),
                         data_dir=data_dir(benchmark.source, data=data, base_dir=benchmark.base_dir))
        assert items and where == str(data)
        for item in items:
            assert item.error is None, item.error
            assert item.prompt
            assert (item.reference is not None) == bool(benchmark.fields.get("reference"))
            audio = item_audio(item, 16000)
            assert audio.sample_rate == 16000 and audio.duration > 0.1
    if subset == "sd-qa":
        assert [i.id for i in items] == ["usa-0000", "usa-0001"]  # only the usa accent's file
    if subset == "mmsu":
        assert [i.meta["split"] for i in items] == MMSU_DOMAINS
        assert items[0].id == "biology-0000" and items[0].meta["category"] == "biology"
    if subset == "bbh":
        assert [i.id for i in items] == ["sports_understanding_0", "hyperbaton_0"]
        assert items[1].meta["id"] == "hyperbaton_0" and items[1].reference == "(a)"
    if subset == "ifeval":
        assert items[1].id == "1002"
        assert items[1].meta["instruction_id_list"] == ["keywords:existence", "length_constraints:number_words"]
        assert items[1].meta["kwargs"][0]["keywords"] == ["whiskers", "reward"]
    if subset in ("openbookqa", "mmsu"):
        assert all(i.reference in "ABCD" for i in items)


def test_mmsu_reads_every_domain():
    assert voicebench("mmsu").source["splits"] == MMSU_DOMAINS


VSTYLE = ROOT / "benchmarks" / "vstyle_lite" / "items.jsonl"


def test_vstyle_lite_items():
    benchmark = read_benchmark(definitions_dir() / "vstyle-lite.yaml")
    rows = [json.loads(line) for line in VSTYLE.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 24
    styles = [r["style"] for r in rows]
    assert set(styles) <= set(STYLES)  # the prosody scorer knows every target style
    assert all(styles.count(s) == 3 for s in set(styles))
    assert all(r["audio"] == f"audio/{r['id']}.flac" for r in rows)  # where make_audio.py writes the speech
    emotion = next(s for s in benchmark.scorers if s.name == "emotion")
    assert all(style in DEFAULT_ALIASES for style in emotion.where["style"])  # styles the emotion model can score
    rows, _ = load_rows(benchmark.source, data=None, base_dir=benchmark.base_dir)
    items = to_items(rows, benchmark.fields, split_name="item",
                     data_dir=data_dir(benchmark.source, data=None, base_dir=benchmark.base_dir))
    assert len({i.id for i in items}) == 24 and all(i.error is None for i in items)
    assert all(i.meta["style"] == i.style and i.meta["category"] for i in items)
    assert all(Path(i.audio).parent == VSTYLE.parent / "audio" for i in items)
    if not all(Path(i.audio).is_file() for i in items):
        pytest.skip("the spoken prompts are not synthesized yet (benchmarks/vstyle_lite/make_audio.py)")
    durations = [item_audio(i, 16000).duration for i in items]
    assert all(1.5 < d < 15 for d in durations), durations


def test_align_heldout_items_and_its_style_metric():
    """The held-out prompts of the align recipe load as text items; the style requests keep their style (in meta),
    and the style metric counts exactly them."""
    from evalsuite.eval import metric_value

    benchmark = read_benchmark(definitions_dir() / "align-heldout.yaml")
    rows, _ = load_rows(benchmark.source, data=None, base_dir=benchmark.base_dir)
    items = to_items(rows, benchmark.fields, split_name="item",
                     data_dir=data_dir(benchmark.source, data=None, base_dir=benchmark.base_dir))
    assert len(items) == 40 and all(i.error is None and i.prompt and i.reference and i.audio is None for i in items)
    styled = [i for i in items if i.meta.get("style")]
    assert 0 < len(styled) < len(items) and {i.meta["style"] for i in styled} <= set(STYLES)
    metric = next(m for m in benchmark.metrics if m.name == "style_match")
    result_rows = [{"id": i.id, "style": i.style, "meta": i.meta, "reference": i.reference,
                    "prosody.style_match": 0.5 if i.meta.get("style") else None} for i in items]
    entry = {"name": metric.name, "column": metric.column, "scale": metric.scale, "where": metric.where,
             "higher_is_better": True}
    value = metric_value(result_rows, entry)
    assert value["n"] == len(styled) and value["n_failed"] == 0 and value["value"] == pytest.approx(50.0)
