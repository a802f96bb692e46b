"""EmotionScorer on a tiny random SpeechBrain model in the real model's layout, loaded through the real path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from rewards.base import Sample
from rewards.emotion import NO_TARGET, EmotionConfig, EmotionScorer, ModelUnavailableError

pytest.importorskip("speechbrain")

LABELS = ["neu", "ang", "hap", "sad"]
HIDDEN = 32

# The structure of speechbrain/emotion-recognition-wav2vec2-IEMOCAP's hyperparams.yaml, with a tiny encoder.
HYPERPARAMS = f"""\
HPARAMS_NEEDED: ["encoder_dim", "out_n_neurons", "label_encoder", "softmax"]
MODULES_NEEDED: ["wav2vec2", "avg_pool", "output_mlp"]

wav2vec2_hub: facebook/wav2vec2-base
pretrained_path: speechbrain/emotion-recognition-wav2vec2-IEMOCAP

encoder_dim: {HIDDEN}
out_n_neurons: {len(LABELS)}

wav2vec2: !new:speechbrain.lobes.models.huggingface_transformers.wav2vec2.Wav2Vec2
    source: !ref <wav2vec2_hub>
    output_norm: True
    freeze: True
    save_path: wav2vec2_checkpoints

avg_pool: !new:speechbrain.nnet.pooling.StatisticsPooling
    return_std: False

output_mlp: !new:speechbrain.nnet.linear.Linear
    input_size: !ref <encoder_dim>
    n_neurons: !ref <out_n_neurons>
    bias: False

model: !new:torch.nn.ModuleList
    - [!ref <output_mlp>]

modules:
    wav2vec2: !ref <wav2vec2>
    output_mlp: !ref <output_mlp>
    avg_pool: !ref <avg_pool>

softmax: !new:speechbrain.nnet.activations.Softmax

label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        wav2vec2: !ref <wav2vec2>
        model: !ref <model>
        label_encoder: !ref <label_encoder>
    paths:
        wav2vec2: !ref <pretrained_path>/wav2vec2.ckpt
        model: !ref <pretrained_path>/model.ckpt
        label_encoder: !ref <pretrained_path>/label_encoder.txt
"""


def build_tiny_model(root: Path, encoder_in_model_dir: bool = True) -> Path:
    """A random model: tiny HF wav2vec2 folder + SpeechBrain hyperparams.yaml, wav2vec2.ckpt, model.ckpt, labels."""
    import torch
    from hyperpyyaml import load_hyperpyyaml
    from speechbrain.dataio.encoder import CategoricalEncoder
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    model_dir = root / "emotion-model"
    encoder_dir = (model_dir if encoder_in_model_dir else root) / "wav2vec2-tiny"
    config = Wav2Vec2Config(
        hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, feat_extract_norm="group", do_stable_layer_norm=False,
    )
    Wav2Vec2Model(config).save_pretrained(encoder_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True).save_pretrained(encoder_dir)

    model_dir.mkdir(parents=True, exist_ok=True)
    # The real yaml names a hub repo; the scorer must resolve a local folder instead (relative to the model dir).
    (model_dir / "hyperparams.yaml").write_text(HYPERPARAMS.replace(
        "wav2vec2_hub: facebook/wav2vec2-base",
        f"wav2vec2_hub: {encoder_dir.name if encoder_in_model_dir else encoder_dir}",
    ))
    # Random checkpoints with exactly the keys the pretrainer loads: build the modules from the same yaml.
    hparams = load_hyperpyyaml(HYPERPARAMS, {"wav2vec2_hub": str(encoder_dir), "pretrained_path": str(model_dir)})
    wav2vec2 = hparams["wav2vec2"]
    with torch.no_grad():
        for p in wav2vec2.parameters():
            p.add_(0.05 * torch.randn_like(p))  # differs from the HF folder's weights: the ckpt must be loaded
        for p in hparams["model"].parameters():
            p.normal_(0, 1.0)
    torch.save(wav2vec2.state_dict(), model_dir / "wav2vec2.ckpt")
    torch.save(hparams["model"].state_dict(), model_dir / "model.ckpt")
    encoder = CategoricalEncoder()
    encoder.update_from_iterable(LABELS)
    encoder.save(model_dir / "label_encoder.txt")
    return model_dir


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("emotion"))


def clips(n: int = 3) -> list[tuple[str, np.ndarray, int]]:
    """A few CREMA-D clips from the shared real speech (synthetic voiced audio when they are absent)."""
    import soundfile as sf

    default = Path(__file__).resolve().parents[3] / "shared" / "data" / "real_speech"
    root = Path(os.environ.get("WAVALIGN_REAL_SPEECH") or default)
    if (root / "manifest.jsonl").is_file():
        rows = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines() if line.strip()]
        files = [r["file"] for r in rows if "_XX" in r["file"] or r.get("emotion")][:n]
        if len(files) == n:
            out = []
            for name in files:
                data, sr = sf.read(root / name, dtype="float32", always_2d=True)
                out.append((name, data.mean(axis=1), sr))
            return out
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 2) / 16000
    return [(f"synthetic{k}", (0.3 * np.sin(2 * np.pi * (120 + 40 * k) * t) + 0.01 * rng.standard_normal(t.size))
             .astype(np.float32), 16000) for k in range(n)]


@pytest.fixture(scope="module")
def scorer(tiny_model: Path, tmp_path_factory) -> EmotionScorer:
    s = EmotionScorer(EmotionConfig(model=str(tiny_model), savedir=str(tmp_path_factory.mktemp("sb-save"))))
    s.prepare()
    return s


def test_probabilities_label_and_target(scorer: EmotionScorer, report):
    audio = clips()
    metas = [{"emotion": "anger"}, {}, {"style": "Happy"}]
    samples = [Sample(id=name, audio=a, sample_rate=sr, meta=m) for (name, a, sr), m in zip(audio, metas)]
    scores = scorer.score(samples)
    assert len(scores) == 3
    for score in scores:
        probs = score.metrics["probs"]
        assert sorted(probs) == sorted(LABELS)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert score.metrics["label"] == max(probs, key=probs.get)
        assert score.metrics["label"] in probs
    anger, none, happy = scores
    assert anger.error is None and anger.metrics["target"] == "ang"
    assert anger.value == anger.metrics["p_target"] == pytest.approx(anger.metrics["probs"]["ang"])
    assert none.value is None and none.error == NO_TARGET and none.metrics["p_target"] is None
    assert happy.metrics["target"] == "hap" and happy.value == pytest.approx(happy.metrics["probs"]["hap"])
    top = [(s.metrics["label"], round(s.metrics["probs"][s.metrics["label"]], 3)) for s in scores]
    report(f"emotion (tiny random model, {len(scores)} clips): top label and probability {top}")


def test_unknown_target_is_item_error_with_metrics_kept(scorer: EmotionScorer):
    (name, audio, sr), *_ = clips(1)
    fear, bogus, ok = scorer.score([
        Sample(id="fear", audio=audio, sample_rate=sr, meta={"emotion": "fear"}),
        Sample(id="bogus", audio=audio, sample_rate=sr, meta={"emotion": "grumpy"}),
        Sample(id="ok", audio=audio, sample_rate=sr, meta={"emotion": "sad"}),
    ])
    for score in (fear, bogus):
        assert score.value is None and "not one of the model's labels" in score.error
        assert sorted(score.metrics["probs"]) == sorted(LABELS) and score.metrics["label"] in LABELS
    assert ok.error is None and ok.value == pytest.approx(ok.metrics["probs"]["sad"])
    assert fear.metrics["probs"] == ok.metrics["probs"]  # same audio: same numbers (pooling noise is seeded)


def test_short_or_missing_audio_fails_alone(scorer: EmotionScorer):
    short, missing = scorer.score([
        Sample(id="short", audio=np.zeros(800, dtype=np.float32), sample_rate=16000, meta={"emotion": "anger"}),
        Sample(id="missing", audio=None, sample_rate=None),
    ])
    assert short.value is None and short.error
    assert missing.value is None and "audio" in missing.error


def test_info_records_resolved_model(scorer: EmotionScorer, tiny_model: Path):
    info = scorer.info().as_dict()
    assert info["name"] == "emotion" and info["higher_is_better"] is True and info["requires"] == ["audio"]
    assert info["settings"]["model_dir"] == str(tiny_model.resolve())
    assert info["settings"]["wav2vec2_dir"].endswith("wav2vec2-tiny")
    assert info["settings"]["labels"] == LABELS


def test_checkpoint_weights_are_used(tiny_model: Path, tmp_path):
    """The fine-tuned wav2vec2.ckpt (not the HF folder's weights) ends up in the encoder."""
    import torch

    s = EmotionScorer(model=str(tiny_model), savedir=str(tmp_path / "save"))
    s.prepare()
    loaded = s._model().interface.mods.wav2vec2.state_dict()
    saved = torch.load(tiny_model / "wav2vec2.ckpt", map_location="cpu")
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


@pytest.mark.slow
def test_encoder_folder_given_in_config(tmp_path):
    """An absolute wav2vec2 folder outside the model dir, and EmotionConfig(wav2vec2=...) overriding the yaml."""
    model_dir = build_tiny_model(tmp_path / "m", encoder_in_model_dir=False)
    text = (model_dir / "hyperparams.yaml").read_text()
    (model_dir / "hyperparams.yaml").write_text(
        "\n".join("wav2vec2_hub: facebook/wav2vec2-base" if line.startswith("wav2vec2_hub:") else line
                  for line in text.splitlines()))
    s = EmotionScorer(model=str(model_dir), wav2vec2=str(tmp_path / "m" / "wav2vec2-tiny"),
                      savedir=str(tmp_path / "save"))
    s.prepare()
    (score,) = s.score([Sample(id="x", audio=clips(1)[0][1], sample_rate=clips(1)[0][2], meta={"emotion": "neutral"})])
    assert score.metrics["target"] == "neu" and score.value == pytest.approx(score.metrics["probs"]["neu"])


def test_missing_model_dir_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailableError, match="--emotion-model"):
        EmotionScorer(model=str(tmp_path / "nope")).prepare()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="hyperparams.yaml"):
        EmotionScorer(model=str(tmp_path / "empty")).prepare()


def test_repo_id_not_in_hf_cache_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="--emotion-model"):
        EmotionScorer(model="someone/not-cached-emotion-model").prepare()


def test_encoder_not_available_is_unavailable(tiny_model: Path, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="wav2vec2"):
        EmotionScorer(model=str(tiny_model), wav2vec2="facebook/wav2vec2-base", savedir=str(tmp_path / "s")).prepare()


def test_config_aliases_and_keys():
    cfg = EmotionConfig(aliases={"Furious": "ang"}, target_keys="mood")
    assert cfg.aliases["furious"] == "ang" and cfg.aliases["excited"] == "hap"
    assert cfg.target_keys == ("mood",)
    assert EmotionScorer(cfg).target(Sample(id="a", meta={"mood": "furious"})) == "furious"


@pytest.mark.slow
def test_pre_1_0_yaml_class_path(tmp_path):
    """Older revisions of the real yaml name ``huggingface_wav2vec.HuggingFaceWav2Vec2`` with ``pretrain: False``."""
    model_dir = build_tiny_model(tmp_path / "m")
    text = (model_dir / "hyperparams.yaml").read_text()
    text = text.replace("speechbrain.lobes.models.huggingface_transformers.wav2vec2.Wav2Vec2",
                        "speechbrain.lobes.models.huggingface_wav2vec.HuggingFaceWav2Vec2")
    text = text.replace("    freeze: True\n", "    freeze: True\n    pretrain: False\n")
    (model_dir / "hyperparams.yaml").write_text(text)
    s = EmotionScorer(model=str(model_dir), savedir=str(tmp_path / "save"))
    (score,) = s.score([Sample(id="x", audio=clips(1)[0][1], sample_rate=clips(1)[0][2], meta={"emotion": "sad"})])
    assert sum(score.metrics["probs"].values()) == pytest.approx(1.0, abs=1e-5) and score.error is None


def test_cli_scores_with_a_local_model(tiny_model: Path, tmp_path, monkeypatch):
    import json

    import soundfile as sf
    from typer.testing import CliRunner

    from cli import app

    monkeypatch.setenv("HOME", str(tmp_path))  # SpeechBrain's savedir lands under this test's folder
    src = tmp_path / "in"
    src.mkdir()
    for name, audio, rate in clips(2):
        sf.write(src / f"{name}.wav", audio, rate)
    (src / "m.jsonl").write_text("".join(json.dumps({"id": p.stem, "audio": p.name, "emotion": "anger"}) + "\n"
                                         for p in sorted(src.glob("*.wav"))))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["score", str(src / "m.jsonl"), "-o", str(out), "--scorers", "emotion",
                                      "--emotion-model", str(tiny_model), "--no-progress"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["emotion.value"] == pytest.approx(r["emotion.probs"]["ang"]) for r in rows)
