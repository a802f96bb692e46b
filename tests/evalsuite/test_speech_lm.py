"""Speech-in, text-out adapters on tiny random-initialised models of the real transformers classes, saved to folders
with processors built offline (a byte-level tokenizer with the models' special tokens and chat templates)."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tone

from evalsuite.adapters import AdapterError, Request, Turn, build_adapter
from evalsuite.speech_lm import Qwen2AudioAdapter, Qwen3OmniThinkerAdapter, VoxtralAdapter
from rewards.audio import resample

N_MEL = 16


def _byte_vocab() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: i for i, c in enumerate(bytes_to_unicode().values())}


def make_qwen2_audio(folder: Path) -> Path:
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        Qwen2Tokenizer,
        WhisperFeatureExtractor,
    )

    tok = Qwen2Tokenizer(vocab=_byte_vocab(), merges=[], additional_special_tokens=[
        "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"])
    # chat_template None: the processor's own (the Hub checkpoint's template, kept in transformers)
    processor = Qwen2AudioProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=N_MEL), tokenizer=tok)
    config = Qwen2AudioConfig(
        audio_config=dict(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          num_mel_bins=N_MEL),
        text_config=dict(model_type="qwen2", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1),
        audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


QWEN3_OMNI_TEMPLATE = (  # the audio-and-text part of Qwen3-Omni's template
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'audio' %}<|audio_start|><|audio_pad|><|audio_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_qwen3_omni_thinker(folder: Path) -> Path:
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeProcessor,
        Qwen3OmniMoeThinkerConfig,
        Qwen3OmniMoeThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    named = {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>", "audio_eos_token": "<|audio_end|>",
             "image_token": "<|image_pad|>", "video_token": "<|video_pad|>", "vision_bos_token": "<|vision_start|>",
             "vision_eos_token": "<|vision_end|>"}
    tok = Qwen2Tokenizer(vocab=_byte_vocab(), merges=[], additional_special_tokens=["<|im_start|>", "<|im_end|>"],
                         extra_special_tokens=named)
    tok.add_tokens(list(named.values()), special_tokens=True)
    processor = Qwen3OmniMoeProcessor(image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
                                      feature_extractor=WhisperFeatureExtractor(feature_size=N_MEL), tokenizer=tok,
                                      chat_template=QWEN3_OMNI_TEMPLATE)
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in named.items()}
    config = Qwen3OmniMoeThinkerConfig(
        audio_config=dict(num_mel_bins=N_MEL, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                          d_model=16, output_dim=32, downsample_hidden_size=8),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=32,
                           deepstack_visual_indexes=[0], num_position_embeddings=16),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, moe_intermediate_size=16,
                         num_experts=4, num_experts_per_tok=2,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                          "interleaved": True}),
        audio_token_id=ids["audio_token"], image_token_id=ids["image_token"], video_token_id=ids["video_token"],
        audio_start_token_id=ids["audio_bos_token"], vision_start_token_id=ids["vision_bos_token"])
    torch.manual_seed(0)
    Qwen3OmniMoeThinkerForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_voxtral(folder: Path) -> Path:
    """Voxtral's folder: tekken.json (mistral-common's format: 256 byte tokens, the special tokens up to
    [AUDIO] = 24 and [BEGIN_AUDIO] = 25, the audio settings of Voxtral Mini), Whisper features, the model."""
    from mistral_common.tokens.tokenizers.base import SpecialTokens
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    folder.mkdir(parents=True, exist_ok=True)
    specials = [t["token_str"] for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS] + [
        SpecialTokens.args.value, SpecialTokens.call_id.value, "<SPECIAL_22>", "<SPECIAL_23>",
        SpecialTokens.audio.value, SpecialTokens.begin_audio.value, SpecialTokens.transcribe.value]
    n_special = 32
    tekken = {
        "config": {"pattern": r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
                   "num_vocab_tokens": 256, "default_vocab_size": 256 + n_special,
                   "default_num_special_tokens": n_special, "version": "v7"},
        "vocab": [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None}
                  for i in range(256)],
        "special_tokens": [{"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(specials)],
        "version": 1, "type": "Tekken",
        "audio": {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": 30.0,
                  "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}},
    }
    (folder / "tekken.json").write_text(json.dumps(tekken))
    WhisperFeatureExtractor(feature_size=128).save_pretrained(folder)
    config = VoxtralConfig(
        audio_config=dict(num_mel_bins=128, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          hidden_size=16, num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2),
        text_config=dict(model_type="llama", vocab_size=256 + n_special, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16),
        audio_token_id=24)
    torch.manual_seed(0)
    VoxtralForConditionalGeneration(config).save_pretrained(folder)
    return folder


FAMILIES = {
    "qwen2-audio": (Qwen2AudioAdapter, make_qwen2_audio, ()),
    "qwen3-omni-thinker": (Qwen3OmniThinkerAdapter, make_qwen3_omni_thinker, ("torchvision",)),
    "voxtral": (VoxtralAdapter, make_voxtral, ("mistral_common",)),
}


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """(adapter class, its tiny model folder) for each family; skipped where its processor's package is missing."""
    cls, make, needs = FAMILIES[request.param]
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{request.param}'s processor needs {', '.join(missing)}")
    torch.set_num_threads(1)
    return cls, make(tmp_path_factory.mktemp(request.param))


def _capture(model) -> list[dict]:
    """Record the inputs of every forward call of ``model`` (input_ids, input_features, attention_mask)."""
    calls: list[dict] = []

    def hook(module, args, kwargs):
        calls.append({k: kwargs[k].detach().clone() for k in ("input_ids", "input_features", "attention_mask")
                      if kwargs.get(k) is not None})

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _first_step_logits(model) -> list[torch.Tensor]:
    """The next-token logits at the last prompt position of every forward call of ``model``."""
    logits: list[torch.Tensor] = []
    model.register_forward_hook(lambda module, args, output: logits.append(output.logits[:, -1].detach().clone()))
    return logits


def test_audio_reaches_the_model_resampled(family):
    cls, folder = family
    adapter = cls(path=str(folder), max_new_tokens=3, batch_size=2)
    adapter.prepare()
    calls = _capture(adapter.model)
    question = tone(1.0, rate=22050, freq=330)  # at another rate: the adapter resamples to 16 kHz
    (response,) = adapter.respond([Request(id="q", audio=question, sample_rate=22050, text="what is this?")])
    assert response.error is None and response.text and response.audio is None
    seen = calls[0]["input_features"][0].float().numpy()
    fe = adapter.processor.feature_extractor
    expected = fe(resample(question, 22050, 16000), sampling_rate=16000, return_tensors="np")["input_features"][0]
    frames = 16000 // fe.hop_length - 2  # the clip's own frames (the padding's edge frames differ)
    assert seen.shape[0] == expected.shape[0]
    assert np.allclose(seen[:, :frames], expected[:, :frames], atol=1e-4)
    # the spoken question goes in as audio only (its transcript is not given to the model)
    prompt = adapter.processor.tokenizer.decode(calls[0]["input_ids"][0].tolist())
    assert "what is this" not in prompt
    # another audio gives other features and other first-step logits
    calls.clear()
    other = tone(1.0, rate=16000, freq=880, amp=0.6)
    adapter.respond([Request(id="q2", audio=other, sample_rate=16000)])
    assert not torch.allclose(calls[0]["input_features"], torch.from_numpy(seen[None]).to(calls[0]["input_features"]))


def test_batched_equals_one_by_one_and_history_in_prompt(family):
    cls, folder = family
    adapter = cls(path=str(folder), max_new_tokens=4, batch_size=3)
    history = (Turn("user", "My name is Sam."), Turn("assistant", "Hello Sam."))
    requests = [
        Request(id="a", audio=tone(0.6, freq=300), sample_rate=16000),
        Request(id="b", text="What is my name?", history=history),
        Request(id="c", audio=tone(1.3, freq=500), sample_rate=16000,
                history=(Turn("user", None, tone(0.8, freq=700), 16000), Turn("assistant", "A tone."))),
    ]
    adapter.prepare()
    logits = _first_step_logits(adapter.model)
    batched = adapter.respond(requests)
    prefill = logits[0]  # the batch's first forward call: the whole (left-padded) prompts
    alone = []
    for r in requests:
        logits.clear()
        alone.append((adapter.respond([r])[0], logits[0][0]))
    assert [r.error for r in batched] == [None, None, None]
    assert [r.text for r in batched] == [r.text for r, _ in alone]
    for k, (_, row) in enumerate(alone):  # padding and masks change nothing: each row's logits as alone
        assert torch.allclose(prefill[k], row, atol=1e-4), k
    assert not torch.allclose(alone[0][1], alone[2][1], atol=1e-3)  # other audio, other logits
    assert batched[1].meta["history_turns"] == 2

    calls = _capture(adapter.model)
    adapter.respond([requests[1]])
    prompt = adapter.processor.tokenizer.decode(calls[0]["input_ids"][0].tolist())
    assert prompt.index("My name is Sam.") < prompt.index("Hello Sam.") < prompt.index("What is my name?")
    # a spoken earlier turn arrives as audio: two audio inputs for request c
    calls.clear()
    adapter.respond([requests[2]])
    n_audio = sum(1 for f in calls[0]["input_features"] if f.abs().sum() > 0)
    assert calls[0]["input_features"].shape[0] >= 2 and n_audio >= 2


def test_unaskable_requests_fail_alone(family):
    cls, folder = family
    adapter = cls(path=str(folder), max_new_tokens=2)
    requests = [Request(id="spoken-answer", text="And?", history=(Turn("assistant", None, tone(0.5), 16000),)),
                Request(id="nan", audio=np.full(8000, np.nan, np.float32), sample_rate=16000),
                Request(id="ok", text="Hello?"),
                Request(id="nothing")]
    spoken, nan, ok, nothing = adapter.respond(requests)
    assert "history turn 1: an assistant turn without text" in spoken.error
    assert nan.error.startswith("non_finite: the question audio")
    assert ok.error is None and ok.text
    assert nothing.error == "the request has neither audio nor text"


def test_system_prompt_reaches_the_prompt(family):
    cls, folder = family
    adapter = cls(path=str(folder), max_new_tokens=2, system_prompt="Answer in one word.")
    adapter.prepare()
    calls = _capture(adapter.model)
    spoken, written = adapter.respond([Request(id="s", audio=tone(0.7), sample_rate=16000),
                                       Request(id="t", text="Hi?", system_prompt="Be kind.")])
    assert spoken.error is None and written.error is None
    prompts = [adapter.processor.tokenizer.decode(ids.tolist()) for ids in calls[0]["input_ids"]]
    assert "Answer in one word." in prompts[0] and "Be kind." in prompts[1] and "Answer in" not in prompts[1]


def test_loading_errors_are_one_line(tmp_path, monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path / "llama")
    with pytest.raises(AdapterError, match=r"holds a 'llama' model, not 'qwen2_audio' "
                                           r"\(Qwen2AudioForConditionalGeneration\)") as e:
        build_adapter("qwen2-audio", {"path": str(tmp_path / "llama")}).respond([Request(id="q", text="hi")])
    assert "\n" not in str(e.value)
    # the runner loads the model before any item: one error, no rows of 'model failed'
    from evalsuite.benchmark import parse_benchmark
    from evalsuite.eval import run_eval

    (tmp_path / "items.jsonl").write_text('{"id": "q", "prompt": "hi"}\n')
    bench = parse_benchmark({"name": "t", "version": 1, "source": {"local": "items.jsonl"},
                             "fields": {"id": "id", "prompt": "prompt"}, "scorers": ["loudness"],
                             "metrics": [{"name": "m", "column": "loudness.value"}], "primary": "m"},
                            path=tmp_path / "t.yaml")
    with pytest.raises(AdapterError, match="holds a 'llama' model"):
        run_eval(bench, Qwen2AudioAdapter(path=str(tmp_path / "llama")), tmp_path / "run", progress=False)
    samples = tmp_path / "run" / "samples.jsonl"
    assert not samples.exists() or not samples.read_text()
    with pytest.raises(AdapterError, match="is not a model folder"):
        Qwen2AudioAdapter(path=str(tmp_path / "nowhere")).prepare()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty cache
    with pytest.raises(AdapterError, match=r"cannot load Qwen/Qwen2-Audio-7B-Instruct .*hf download") as e:
        Qwen2AudioAdapter().prepare()
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="dtype"):
        Qwen2AudioAdapter(dtype="int8")


def test_registered_names_build_the_adapters(tmp_path):
    for name, cls in (("qwen2-audio", Qwen2AudioAdapter), ("voxtral", VoxtralAdapter),
                      ("qwen3-omni-thinker", Qwen3OmniThinkerAdapter)):
        adapter = build_adapter(name, {"path": str(tmp_path), "max_new_tokens": 8})
        assert isinstance(adapter, cls) and adapter.info()["max_new_tokens"] == 8
    assert Qwen2AudioAdapter().path == "Qwen/Qwen2-Audio-7B-Instruct"
    assert VoxtralAdapter().path == "mistralai/Voxtral-Mini-3B-2507"
    assert Qwen3OmniThinkerAdapter().path == "Qwen/Qwen3-Omni-30B-A3B-Instruct"
