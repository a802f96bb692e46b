"""evalsuite.data: rows from files, folders, save_to_disk folders and the Hub; items; audio cells in every form."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from evalsuite.data import (
    ROW_ERROR,
    DataError,
    decode_audio_cell,
    item_audio,
    load_rows,
    read_local,
    read_voicebench_outputs,
    to_items,
)
from rewards.audio import AudioError

ROOT = Path(__file__).resolve().parents[2]
VOICEBENCH = ROOT / "tests" / "data" / "voicebench"
FIELDS = {"id": None, "audio": "audio", "prompt": "prompt", "reference": "reference", "style": None, "meta": []}


def tone(seconds: float = 0.5, rate: int = 16000, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def encoded(samples: np.ndarray, rate: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


# -- audio cells ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "MP3"])
def test_bytes_cells_decode_and_resample(fmt):
    signal = tone(rate=22050)
    audio = decode_audio_cell({"bytes": encoded(signal, 22050, fmt), "path": f"a.{fmt.lower()}"}, 16000)
    assert audio.sample_rate == 16000
    # MP3 adds encoder delay/padding; the duration is still about half a second
    assert audio.duration == pytest.approx(0.5, abs=0.06)
    if fmt != "MP3":  # lossless: the resampled waveform is the resampled original
        reference = decode_audio_cell({"array": signal, "sampling_rate": 22050}, 16000).samples
        assert np.max(np.abs(audio.samples - reference)) < 1e-3


def test_array_cells_lists_and_channel_first():
    signal = tone()
    from_list = decode_audio_cell({"array": signal.tolist(), "sampling_rate": 16000}, None)
    assert from_list.sample_rate == 16000 and np.allclose(from_list.samples, signal, atol=1e-6)
    stereo = np.stack([signal, signal])  # (channels, frames), as torchcodec decodes
    assert np.allclose(decode_audio_cell({"array": stereo, "sampling_rate": 16000}).samples, signal, atol=1e-6)
    assert decode_audio_cell({"array": signal, "sampling_rate": 16000}, 8000).sample_rate == 8000


def test_path_cells_relative_to_the_data_file(tmp_path):
    sf.write(tmp_path / "q.flac", tone(), 16000)
    manifest = tmp_path / "items.jsonl"
    manifest.write_text(json.dumps({"audio": "q.flac", "prompt": "hi"}) + "\n"
                        + json.dumps({"audio": {"bytes": None, "path": "q.flac"}, "prompt": "hi again"}) + "\n")
    rows, where = load_rows({}, data=manifest, base_dir=ROOT)
    items = to_items(rows, {**FIELDS, "reference": None}, split_name="item", data_dir=tmp_path)
    assert where == str(manifest)
    for item in items:
        assert item.error is None
        assert item_audio(item, 16000).duration == pytest.approx(0.5)


@pytest.mark.parametrize("cell, kind", [
    ({"bytes": b"RIFF\x00\x00garbage-not-audio", "path": "x.wav"}, "unreadable"),
    (b"\x00\x01\x02 not audio", "unreadable"),
    ({"bytes": None, "path": "/nonexistent/x.wav"}, "missing"),
    ("/nonexistent/x.wav", "missing"),
    ({"bytes": None, "path": None}, "missing"),
    ({"array": np.zeros(16000, np.float32), "sampling_rate": 16000}, "silent"),
    ({"array": [0.1, 0.2], "sampling_rate": None}, "unreadable"),
    ({"array": np.full(16000, np.nan, np.float32), "sampling_rate": 16000}, "non_finite"),
    (None, "missing"),
])
def test_bad_cells_raise_audio_errors(cell, kind):
    with pytest.raises(AudioError) as info:
        decode_audio_cell(cell, 16000)
    assert info.value.kind == kind


def test_corrupt_audio_fails_only_its_item(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = {"bytes": encoded(tone(), 16000, "FLAC"), "path": "good.flac"}
    bad = {"bytes": good["bytes"][:40], "path": "bad.flac"}  # a truncated FLAC header
    table = pa.table({"audio": [good, bad, good], "prompt": ["a", "b", "c"], "reference": ["A", "B", "C"]})
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    rows, _ = load_rows({"split": "test"}, data=tmp_path, base_dir=ROOT)
    items = to_items(rows, FIELDS, split_name="test", data_dir=tmp_path)
    outcomes = []
    for item in items:
        try:
            item_audio(item, 16000)
            outcomes.append("ok")
        except AudioError as e:
            outcomes.append(e.kind)
    assert outcomes == ["ok", "unreadable", "ok"]


# -- rows and items ------------------------------------------------------------------------------------------------


def test_row_problems_stay_with_their_items(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([
        json.dumps({"audio": "a.wav", "prompt": "first", "reference": "A"}),
        "{not json",
        json.dumps({"audio": "a.wav", "prompt": "third"}),  # no reference column
        json.dumps({"audio": "a.wav", "prompt": "  ", "reference": "B"}),  # an empty prompt
        json.dumps(["not", "an", "object"]),
        json.dumps({"audio": "a.wav", "prompt": "sixth", "reference": "C"}),
    ]) + "\n")
    rows, _ = load_rows({"split": "test"}, data=path, base_dir=ROOT)
    items = to_items(rows, FIELDS, split_name="test", data_dir=tmp_path)
    assert [i.id for i in items] == [f"test-{k:04d}" for k in range(6)]
    assert [i.error is None for i in items] == [True, False, False, False, False, True]
    assert "not JSON" in items[1].error
    assert "no 'reference' (fields.reference)" in items[2].error
    assert "empty 'prompt'" in items[3].error
    assert items[5].prompt == "sixth" and items[5].reference == "C"


def test_csv_rows_meta_style_and_ids(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("key,audio,prompt,style,category,extra\nk1,a.wav,say it,sad,explicit,\nk2,b.wav,again,,x,1\n")
    fields = {"id": "key", "audio": "audio", "prompt": "prompt", "reference": None, "style": "style",
              "meta": ["category", "extra", "absent"]}
    rows, _ = load_rows({}, data=path, base_dir=ROOT)
    first, second = to_items(rows, fields, split_name="item", data_dir=tmp_path)
    assert first.id == "k1" and first.style == "sad" and first.error is None
    assert first.meta == {"category": "explicit", "style": "sad"}  # empty cells and absent columns are not copied
    assert first.audio == tmp_path / "a.wav"
    # reference and style are optional per item (a style request has no reference); an empty cell is None
    assert second.error is None and second.style is None
    assert second.meta == {"category": "x", "extra": "1"}
    third, = to_items([{"key": "k3", "audio": "c.wav", "prompt": ""}], fields, split_name="item", data_dir=tmp_path)
    assert third.error == "row 0: empty 'prompt' (fields.prompt); no 'style' (fields.style)"


def test_duplicate_ids_are_an_error(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"id": "x", "prompt": "a"}) + "\n" + json.dumps({"id": "x", "prompt": "b"}) + "\n")
    rows, _ = load_rows({}, data=path, base_dir=ROOT)
    with pytest.raises(DataError, match="duplicate item ids: x"):
        to_items(rows, {"id": "id", "prompt": "prompt"}, split_name="item", data_dir=tmp_path)


def test_local_source_and_missing_sources(tmp_path):
    (tmp_path / "items.jsonl").write_text(json.dumps({"prompt": "p"}) + "\n")
    rows, where = load_rows({"local": "items.jsonl"}, data=None, base_dir=tmp_path)
    assert rows == [{"prompt": "p"}] and where == str(tmp_path / "items.jsonl")
    with pytest.raises(DataError, match="names no data source .*does not exist.*--data"):
        load_rows({"local": "gone.jsonl"}, data=None, base_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_rows({}, data=tmp_path / "nothing.parquet", base_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .jsonl/.csv/.parquet files"):
        load_rows({}, data=tmp_path / "empty", base_dir=tmp_path)


# -- folders in the Hub's layout -----------------------------------------------------------------------------------


def _write_shard(path: Path, prompts: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cell = {"bytes": encoded(tone(0.2), 16000, "FLAC"), "path": "x.flac"}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"audio": [cell] * len(prompts), "prompt": prompts}), path)


def test_parquet_shards_of_the_definitions_split(tmp_path):
    root = tmp_path / "voicebench"
    _write_shard(root / "sd-qa" / "usa-00001-of-00002.parquet", ["u3"])
    _write_shard(root / "sd-qa" / "usa-00000-of-00002.parquet", ["u1", "u2"])
    _write_shard(root / "sd-qa" / "aus-00000-of-00001.parquet", ["a1"])
    _write_shard(root / "other" / "usa-00000-of-00001.parquet", ["wrong subset"])
    source = {"hf": "hlt-lab/voicebench", "subset": "sd-qa", "split": "usa"}
    for data in (root, root / "sd-qa"):  # the dataset's root (the subset folder is entered) or the subset folder
        rows, _ = load_rows(source, data=data, base_dir=tmp_path)
        assert [r["prompt"] for r in rows] == ["u1", "u2", "u3"]  # shards in order
    rows, _ = load_rows(source, data=root / "sd-qa", base_dir=tmp_path, limit=2)
    assert [r["prompt"] for r in rows] == ["u1", "u2"]
    # one file is read whatever its split: how to pick another accent
    rows, _ = load_rows(source, data=root / "sd-qa" / "aus-00000-of-00001.parquet", base_dir=tmp_path)
    assert [r["prompt"] for r in rows] == ["a1"]
    with pytest.raises(DataError, match=r"no files of split gbr \(it has: aus, usa\)"):
        load_rows({**source, "split": "gbr"}, data=root / "sd-qa", base_dir=tmp_path)


def test_several_splits_concatenate_and_name_their_items(tmp_path):
    _write_shard(tmp_path / "mmsu" / "law-00000-of-00001.parquet", ["l1", "l2"])
    _write_shard(tmp_path / "mmsu" / "biology-00000-of-00001.parquet", ["b1"])
    source = {"subset": "mmsu", "splits": ["biology", "law"]}
    rows, _ = load_rows(source, data=tmp_path, base_dir=tmp_path)
    items = to_items(rows, {"audio": "audio", "prompt": "prompt"}, split_name="item", data_dir=tmp_path)
    assert [(i.id, i.prompt, i.meta["split"]) for i in items] == [
        ("biology-0000", "b1", "biology"), ("law-0000", "l1", "law"), ("law-0001", "l2", "law")]
    with pytest.raises(DataError, match="no files of split physics"):
        load_rows({**source, "splits": ["biology", "physics"]}, data=tmp_path, base_dir=tmp_path)


def test_unnamed_shards_are_one_split(tmp_path):
    _write_shard(tmp_path / "part0.parquet", ["p0"])
    (tmp_path / "part1.jsonl").write_text(json.dumps({"prompt": "p1"}) + "\n")
    rows = read_local(tmp_path, splits=["test"])
    assert [r["prompt"] for r in rows] == ["p0", "p1"]


def test_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    cell = {"bytes": encoded(tone(), 16000, "WAV"), "path": "q.wav"}
    test = datasets.Dataset.from_dict({"audio": [cell, cell], "prompt": ["t1", "t2"], "reference": ["A", "B"]})
    test = test.cast_column("audio", datasets.Audio())
    usa = datasets.Dataset.from_dict({"audio": [cell], "prompt": ["u1"], "reference": ["C"]})
    usa = usa.cast_column("audio", datasets.Audio())
    test.save_to_disk(str(tmp_path / "single"))
    datasets.DatasetDict({"test": test, "usa": usa}).save_to_disk(str(tmp_path / "dict"))

    rows, _ = load_rows({"split": "usa"}, data=tmp_path / "single", base_dir=tmp_path)  # a Dataset: no choice
    assert [r["prompt"] for r in rows] == ["t1", "t2"]
    rows, _ = load_rows({"split": "usa"}, data=tmp_path / "dict", base_dir=tmp_path)
    items = to_items(rows, FIELDS, split_name="usa", data_dir=tmp_path / "dict")
    assert [(i.id, i.prompt, i.reference) for i in items] == [("usa-0000", "u1", "C")]
    assert item_audio(items[0], 16000).duration == pytest.approx(0.5)  # {"bytes", "path"}, not decoded by datasets
    rows, _ = load_rows({"splits": ["test", "usa"]}, data=tmp_path / "dict", base_dir=tmp_path, limit=2)
    assert [r["prompt"] for r in rows] == ["t1", "t2"]
    with pytest.raises(DataError, match=r"no split gbr \(it has: test, usa\)"):
        load_rows({"split": "gbr"}, data=tmp_path / "dict", base_dir=tmp_path)


@pytest.mark.slow
def test_hub_unreachable_is_one_clear_error(tmp_path):
    """Offline (as here and in CI): the Hub load fails and the message says how to pass a local copy."""
    code = (
        "from pathlib import Path\n"
        "from evalsuite.data import load_rows, DataError\n"
        "try:\n"
        "    load_rows({'hf': 'hlt-lab/voicebench', 'subset': 'openbookqa', 'split': 'test'}, data=None,"
        " base_dir=Path('.'))\n"
        "except DataError as e:\n"
        "    print('DATAERROR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    line = next(x for x in result.stdout.splitlines() if x.startswith("DATAERROR"))
    assert "cannot load hlt-lab/voicebench (openbookqa) split test from the Hugging Face Hub" in line
    assert "--data" in line and "openbookqa/test-00000-of-00001.parquet" in line and "save_to_disk" in line


# -- VoiceBench's output files -------------------------------------------------------------------------------------


def test_voicebench_outputs_rescore_with_the_definitions_fields(tmp_path):
    rows = read_voicebench_outputs(VOICEBENCH / "outputs" / "naive-openbookqa-test-audio.jsonl")
    assert [r["response"] for r in rows] == ["The answer is B. Plants need sunlight.", "I think it's A."]
    items = to_items(rows, FIELDS, split_name="test", data_dir=tmp_path, with_audio=False)
    dataset_rows, _ = load_rows({"subset": "openbookqa", "split": "test"}, data=VOICEBENCH, base_dir=ROOT)
    from_dataset = to_items(dataset_rows, FIELDS, split_name="test", data_dir=VOICEBENCH)
    # same ids, prompts and references as the dataset's items, in the same order
    assert [(i.id, i.prompt, i.reference) for i in items] == [(i.id, i.prompt, i.reference) for i in from_dataset]
    assert all(i.error is None and i.audio is None for i in items)

    ifeval = read_voicebench_outputs(VOICEBENCH / "outputs" / "naive-ifeval-test-audio.jsonl")
    assert ifeval[1]["instruction_id_list"] == ["keywords:existence", "length_constraints:number_words"]
    judged = read_voicebench_outputs(VOICEBENCH / "outputs" / "result-naive-commoneval-test-audio.jsonl")
    assert [r["score"] for r in judged] == [["4"], ["5"]]  # api_judge.py's raw judge answers


def test_voicebench_outputs_bad_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join([
        json.dumps([{"prompt": "p", "response": "wrapped"}]),  # VoiceBench's ifeval reader accepts this
        json.dumps({"prompt": "p"}),
        "garbage",
        json.dumps({"prompt": "p", "response": ""}),
    ]) + "\n")
    rows = read_voicebench_outputs(path)
    assert rows[0] == {"prompt": "p", "response": "wrapped"}
    assert "no 'response'" in rows[1][ROW_ERROR] and "not JSON" in rows[2][ROW_ERROR]
    assert rows[3]["response"] == ""  # an empty answer is an answer (advbench counts it as a refusal)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no rows"):
        read_voicebench_outputs(tmp_path / "empty.jsonl")


def test_fixture_is_small():
    total = sum(p.stat().st_size for p in VOICEBENCH.rglob("*") if p.is_file())
    assert total < 200_000, f"tests/data/voicebench holds {total} bytes"
