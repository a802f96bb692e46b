"""Multi-turn items: the history field of a definition, per-item history errors, the runner passing and recording
the turns, and the cascade putting them into its LLM's conversation."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from conftest import synthesize, tone

from evalsuite.adapters import Request, Response, Turn
from evalsuite.benchmark import BenchmarkError, load_benchmark, parse_benchmark
from evalsuite.cascade import CascadeAdapter, dialogue_messages
from evalsuite.data import history_turns, to_items
from evalsuite.eval import EvalConfig, run_eval
from rewards.base import Score, ScorerInfo

DATA = Path(__file__).resolve().parents[1] / "data" / "multiturn"


class RecordingAdapter:
    """Answers every request with the texts of the turns it was given; keeps the requests it received."""

    name = "recorder"

    def __init__(self) -> None:
        self.received: dict[str, Request] = {}

    def info(self) -> dict:
        return {"adapter": "recorder"}

    def respond(self, requests):
        out = []
        for r in requests:
            self.received[r.id] = r
            said = [t.text or f"<{len(t.audio)} samples>" for t in r.history]
            out.append(Response(text=" | ".join([*said, r.text or ""])))
        return out


class ContainsReference:
    """1 when the reference occurs in the answer text (the recorder's answer holds every turn's text)."""

    name = "contains"
    version = "1"
    higher_is_better = True
    requires = frozenset({"text", "reference"})

    def info(self):
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, {})

    def score(self, samples):
        return [Score(value=float(s.reference.lower() in s.text.lower())) for s in samples]


@pytest.fixture(autouse=True)
def _scorer_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent))


@pytest.fixture(scope="module")
def multiturn(tmp_path_factory) -> Path:
    """A copy of tests/data/multiturn with its audio spoken by espeak-ng (16 kHz WAV)."""
    root = tmp_path_factory.mktemp("multiturn")
    shutil.copy(DATA / "items.jsonl", root / "items.jsonl")
    for name, text in json.loads((DATA / "speech.json").read_text()).items():
        synthesize(text, root / name)
    return root


def _definition(folder: Path, data: str = "items.jsonl") -> Path:
    definition = {
        "name": "multiturn-test", "version": 1, "description": "multi-turn runner test",
        "source": {"local": data},
        "fields": {"id": "id", "audio": "audio", "prompt": "prompt", "reference": "reference", "history": "turns"},
        "scorers": [{"name": "test_history:ContainsReference", "column": "contains"}],
        "metrics": [{"name": "accuracy", "column": "contains.value", "scale": 100}],
        "primary": "accuracy",
    }
    path = folder / "multiturn-test.yaml"
    path.write_text(yaml.safe_dump(definition))
    return path


def _rows(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (out / "samples.jsonl").read_text().splitlines())}


def test_history_reaches_the_adapter_and_is_recorded(multiturn, tmp_path):
    bench = load_benchmark(_definition(multiturn))
    adapter = RecordingAdapter()
    result = run_eval(bench, adapter, tmp_path / "run", EvalConfig(batch_size=3), progress=False)
    rows = _rows(tmp_path / "run")
    assert list(rows) == ["capital-river", "name-recall", "single-turn", "spoken-assistant", "bad-role",
                          "bad-audio", "bad-empty-turn", "bad-not-a-list"]

    # the spoken first turn arrives as text and as the decoded file's samples at the prompt rate
    first = adapter.received["capital-river"]
    assert [t.role for t in first.history] == ["user", "assistant"]
    assert first.history[0].text == "What is the capital of France?" and first.history[0].sample_rate == 16000
    expected, rate = sf.read(multiturn / "capital-river-1.wav", dtype="float32")
    assert rate == 16000 and np.allclose(first.history[0].audio, expected, atol=1e-4)
    assert first.history[1] == Turn("assistant", "The capital of France is Paris.")
    assert adapter.received["name-recall"].history[0].text == "Hello, my name is Sam."
    assert adapter.received["single-turn"].history == ()
    spoken = adapter.received["spoken-assistant"].history[1]
    assert spoken.role == "assistant" and spoken.text is None and len(spoken.audio) > 8000
    # name-recall's answer (built from its turns) holds 'Sam' only because the history got there
    assert rows["name-recall"]["contains.value"] == 1.0

    # samples.jsonl says what the model was asked: texts, audio paths and lengths, no arrays
    recorded = rows["capital-river"]["history"]
    assert recorded[0]["role"] == "user" and recorded[0]["text"] == "What is the capital of France?"
    assert recorded[0]["audio"] == str(multiturn / "capital-river-1.wav")
    assert recorded[0]["audio_seconds"] == pytest.approx(len(expected) / 16000, abs=1e-3)
    assert recorded[1] == {"role": "assistant", "text": "The capital of France is Paris.", "audio": None}
    assert rows["single-turn"]["history"] == []
    assert rows["spoken-assistant"]["history"][1]["text"] is None

    # bad histories fail alone, each with its reason; the others were answered
    errors = {k: rows[k]["response.error"] for k in rows if k.startswith("bad-")}
    assert "role must be 'user' or 'assistant', got 'system'" in errors["bad-role"]
    assert errors["bad-audio"].startswith("history audio missing") and "history turn 1 (user)" in errors["bad-audio"]
    assert "history turn 1 (user) has neither text nor audio" in errors["bad-empty-turn"]
    assert "history must be a list of turns, got dict" in errors["bad-not-a-list"]
    assert not any(k.startswith("bad-") for k in adapter.received)
    assert all(rows[k]["response.error"] is None for k in rows if not k.startswith("bad-"))
    assert result.results["n_responded"] == 4 and result.results["n_items_with_errors"] == 4
    assert (tmp_path / "run" / "samples.csv").read_text().splitlines()[0].count("history") == 1


def test_history_with_embedded_audio_bytes_in_parquet(multiturn, tmp_path):
    """The Hub's parquet layout: turns as a list of structs whose audio holds the file's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    wav = (multiturn / "capital-river-1.wav").read_bytes()
    audio_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    turn_type = pa.struct([("role", pa.string()), ("text", pa.string()), ("audio", audio_type)])
    table = pa.table({
        "id": ["embedded", "text-only"],
        "prompt": ["And which river runs through it?", "What is my name?"],
        "reference": ["Seine", "Sam"],
        "turns": pa.array([
            [{"role": "user", "text": None, "audio": {"bytes": wav, "path": "turn1.wav"}},
             {"role": "assistant", "text": "Paris.", "audio": None}],
            [{"role": "user", "text": "I am Sam.", "audio": None}],
        ], type=pa.list_(turn_type)),
    })
    pq.write_table(table, tmp_path / "test-00000-of-00001.parquet")
    definition = yaml.safe_load(_definition(tmp_path).read_text())
    definition["fields"]["audio"] = None
    definition["source"] = {"local": "test-00000-of-00001.parquet", "split": "test"}
    (tmp_path / "multiturn-test.yaml").write_text(yaml.safe_dump(definition))
    adapter = RecordingAdapter()
    run_eval(load_benchmark(tmp_path / "multiturn-test.yaml"), adapter, tmp_path / "run", progress=False)
    rows = _rows(tmp_path / "run")
    turn = adapter.received["embedded"].history[0]
    assert turn.text is None and turn.sample_rate == 16000
    assert np.allclose(turn.audio, sf.read(io.BytesIO(wav), dtype="float32")[0], atol=1e-4)
    assert rows["embedded"]["history"][0]["audio"] == "turn1.wav"  # the embedded file's name, not its bytes
    assert rows["embedded"]["history"][1] == {"role": "assistant", "text": "Paris.", "audio": None}
    assert adapter.received["text-only"].history == (Turn("user", "I am Sam."),)
    assert rows["text-only"]["contains.value"] == 1.0


def test_history_cells_and_definition():
    base = Path("/data")
    assert history_turns(None, base) == ([], None) and history_turns("", base) == ([], None)
    turns, problem = history_turns('[{"role": "user", "text": "hi", "audio": "a.wav"}]', base)  # a CSV cell
    assert problem is None and turns == [{"role": "user", "text": "hi", "audio": base / "a.wav"}]
    assert "not JSON" in history_turns("[{", base)[1]
    assert "turn 2 is not a mapping" in history_turns([{"role": "user", "text": "a"}, "b"], base)[1]
    assert "text must be a string" in history_turns([{"role": "user", "text": 3}], base)[1]
    # a row without the history column has no earlier turns; a single bad row does not stop the others
    items = to_items([{"q": "a?"}, {"q": "b?", "h": [{"role": "bot", "text": "x"}]}],
                     {"prompt": "q", "history": "h"}, split_name="test", data_dir=base, with_audio=False)
    assert items[0].history == [] and items[0].error is None
    assert "role must be 'user' or 'assistant', got 'bot'" in items[1].error
    with pytest.raises(BenchmarkError, match="unknown fields"):
        parse_benchmark({"name": "x", "version": 1, "fields": {"turns": "t"}, "scorers": ["loudness"],
                         "metrics": [{"name": "m", "column": "loudness.value"}], "primary": "m"})


# -- the cascade --------------------------------------------------------------------------------------------------


def test_dialogue_messages_put_the_earlier_turns_before_the_question():
    messages = dialogue_messages("Be brief.", [("user", "My name is Sam."), ("assistant", "Hi Sam.")],
                                 "What is my name?")
    assert messages == [{"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "My name is Sam."},
                        {"role": "assistant", "content": "Hi Sam."},
                        {"role": "user", "content": "What is my name?"}]


class _FakeAsr:
    """Transcribes a clip as the text registered for its length (no model)."""

    def __init__(self, by_length: dict[int, str]):
        self.by_length = by_length
        self.calls = 0

    def transcribe(self, audios, languages):
        from types import SimpleNamespace

        self.calls += 1
        return [SimpleNamespace(text=self.by_length[len(a)]) for a in audios]


class _FakeLlm:
    """Renders a conversation as 'role: content' lines and replies with the number of messages it saw."""

    def __init__(self) -> None:
        self.conversations: list[list[dict]] = []

    def render(self, messages):
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def generate(self, batch, **kwargs):
        self.conversations += batch
        return [[f"{len(messages)} messages"] for messages in batch]


def test_cascade_hears_spoken_turns_and_sends_the_dialogue_to_its_llm():
    """The cascade's wiring with stand-in models: spoken user turns go through ASR (together with the questions),
    assistant turns keep their text, the LLM gets the whole dialogue, a bad turn fails only its item."""
    turn1, question, assistant_audio = tone(0.5), tone(0.7), tone(0.9)
    asr = _FakeAsr({8000: "what is the capital of france", 11200: "and its river", 14400: "it is paris"})
    adapter = CascadeAdapter(speak=False, batch_size=8, system_prompt="Be brief.")
    adapter._asr, adapter._llm = asr, _FakeLlm()
    requests = [
        Request(id="spoken", audio=question, sample_rate=16000, text="And its river?",
                history=(Turn("user", "What is the capital of France?", turn1, 16000), Turn("assistant", "Paris."))),
        Request(id="assistant-audio", text="What did you say?",
                history=(Turn("user", "Capital?"), Turn("assistant", None, assistant_audio, 16000))),
        Request(id="bad-turn", text="Hm?", history=(Turn("user", None, np.full(8000, np.nan, np.float32), 16000),)),
        Request(id="single", text="Hello?"),
    ]
    spoken, assistant_audio_reply, bad, single = adapter.respond(requests)
    assert asr.calls == 1  # the spoken turns and questions were transcribed in one batch
    by_last = {c[-1]["content"]: c for c in adapter._llm.conversations}
    assert by_last["and its river"] == [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "what is the capital of france"},
                                        {"role": "assistant", "content": "Paris."},
                                        {"role": "user", "content": "and its river"}]
    assert spoken.text == "4 messages" and spoken.meta["history"][0] == {
        "role": "user", "text": "what is the capital of france", "source": "asr"}
    assert by_last["What did you say?"][2] == {"role": "assistant", "content": "it is paris"}
    assert assistant_audio_reply.meta["history"][1]["source"] == "asr"
    assert bad.error.startswith("history turn 1 audio: non_finite") and bad.text is None
    assert single.text == "2 messages" and "history" not in single.meta
