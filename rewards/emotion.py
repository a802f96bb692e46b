"""Speech emotion: class probabilities from a SpeechBrain emotion classifier, and the probability of a target emotion.

Model: SpeechBrain's ``speechbrain/emotion-recognition-wav2vec2-IEMOCAP`` (wav2vec 2.0 base fine-tuned on IEMOCAP;
Wang et al., "A Fine-tuned Wav2vec 2.0/HuBERT Benchmark For Speech Emotion Recognition", 2021). Four classes:
``neu`` (neutral), ``ang`` (anger), ``hap`` (happiness, IEMOCAP's happy + excited), ``sad`` (sadness). Input is
16 kHz mono. Per item:

    probs       {label: probability}, softmax over the model's classes (labels as the model's label encoder has them)
    label       the most probable label (``label_name`` spells it out: ``ang`` → ``anger``)
    target      the requested emotion after aliasing (``anger`` → ``ang``), when ``sample.meta`` names one
    p_target    probs[target]

``value`` (the reward, in [0, 1]) is ``p_target`` when the sample's meta names a target emotion (key ``emotion``,
else ``style``); without a target it is None with the reason given, and the label and probabilities are still
reported. A target the model has no class for (``fear`` for the IEMOCAP model) is that item's error.

Loading, fully offline. The model is a SpeechBrain directory: ``hyperparams.yaml`` (modules ``wav2vec2`` →
``avg_pool`` → ``output_mlp``, a ``label_encoder`` and a ``pretrainer``) with ``wav2vec2.ckpt``, ``model.ckpt``
and ``label_encoder.txt``. It is loaded by SpeechBrain's own ``Pretrained.from_hparams`` (what ``foreign_class``
with the repository's ``custom_interface.py`` calls too; we use a small interface of our own instead of importing
that file so that no downloaded code is executed). Two overrides make it work without network:

* ``pretrained_path`` (where the pretrainer fetches the checkpoints) is pointed at the local directory;
* ``wav2vec2_hub`` (``facebook/wav2vec2-base`` in the real yaml) is resolved to a local folder: a folder path as
  given (absolute, or relative to the model directory), else the HF cache (``local_files_only``). SpeechBrain's
  wav2vec2 lobe builds the encoder from that folder's ``config.json`` / ``preprocessor_config.json`` and weights;
  the fine-tuned weights in ``wav2vec2.ckpt`` then replace them.

How to point it at the real model (on a machine with internet, once)::

    huggingface-cli download speechbrain/emotion-recognition-wav2vec2-IEMOCAP
    huggingface-cli download facebook/wav2vec2-base
    # then offline: the default model id resolves from the HF cache, or copy both into folders and use
    #   --emotion-model /models/emotion-recognition-wav2vec2-IEMOCAP
    # with ``wav2vec2_hub: /models/wav2vec2-base`` in its hyperparams.yaml (or EmotionConfig(wav2vec2=...)).

The yaml may use the SpeechBrain 1.x class path (``speechbrain.lobes.models.huggingface_transformers.wav2vec2
.Wav2Vec2``, redirected by SpeechBrain itself) or the pre-1.0 one (``speechbrain.lobes.models.huggingface_wav2vec
.HuggingFaceWav2Vec2`` with ``pretrain: False``), which SpeechBrain 1.x no longer has: we register a thin alias.

SpeechBrain's average pooling adds tiny (~1e-5) Gaussian noise to the pooled features; we fix its seed per clip so
the same clip always gets the same probabilities. Clips are scored one at a time, like the model's own
``classify_file``: wav2vec 2.0 base normalises over time in its feature extractor, so zero-padding clips into a
batch would change their probabilities.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rewards.audio import usable_audio
from rewards.base import Sample, Score, ScorerInfo, one_line
from rewards.models import ModelUnavailableError, cached

SAMPLE_RATE = 16000
DEFAULT_MODEL = "speechbrain/emotion-recognition-wav2vec2-IEMOCAP"
NO_TARGET = "no target emotion given (label and probabilities reported)"

# Readable names of the IEMOCAP labels.
LABEL_NAMES = {"neu": "neutral", "ang": "anger", "hap": "happiness", "sad": "sadness"}

# Words people (and dataset manifests) use for an emotion → the model's label. IEMOCAP's "hap" class merges happy
# and excited.
DEFAULT_ALIASES = {
    "neutral": "neu", "neutrality": "neu", "calm": "neu",
    "anger": "ang", "angry": "ang",
    "happy": "hap", "happiness": "hap", "joy": "hap", "excited": "hap", "excitement": "hap", "exc": "hap",
    "sad": "sad", "sadness": "sad",
}

# Top-level yaml keys naming the wav2vec2 encoder source (the real model uses the first).
_HUB_KEYS = ("wav2vec2_hub", "wav2vec2_source")

_HOW_TO = (
    "download it on a machine with internet into the HF cache "
    f"(huggingface-cli download {DEFAULT_MODEL}; huggingface-cli download facebook/wav2vec2-base) "
    "or into a folder, and pass --emotion-model PATH"
)


@dataclass(frozen=True)
class EmotionConfig:
    """Settings of the emotion scorer (recorded with the results).

    Attributes:
        model: a local SpeechBrain emotion-recognition directory (``hyperparams.yaml`` + checkpoints), or an HF repo
            id found in the local HF cache (never downloaded).
        wav2vec2: the wav2vec2 encoder's folder or cached HF repo id; None = the yaml's ``wav2vec2_hub``.
        device: ``cpu`` or ``cuda``.
        target_keys: keys of ``sample.meta`` naming the target emotion; the first present one wins.
        aliases: emotion word → model label (case-insensitive), added to `DEFAULT_ALIASES`.
        savedir: where SpeechBrain links the model files; None = ``~/.cache/wavalign/emotion/<hash>``.
    """

    model: str = DEFAULT_MODEL
    wav2vec2: str | None = None
    device: str = "cpu"
    target_keys: tuple[str, ...] = ("emotion", "style")
    aliases: Mapping[str, str] = field(default_factory=dict)
    savedir: str | None = None

    def __post_init__(self) -> None:
        keys = (self.target_keys,) if isinstance(self.target_keys, str) else tuple(self.target_keys)
        object.__setattr__(self, "target_keys", keys)
        merged = {**DEFAULT_ALIASES, **{k.strip().lower(): v.strip() for k, v in dict(self.aliases).items()}}
        object.__setattr__(self, "aliases", merged)
        if not str(self.model).strip():
            raise ValueError("emotion model must be a directory or an HF repo id")


def _model_dir(model: str) -> Path:
    """The local directory of ``model`` (a folder, or an HF repo id in the local HF cache)."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "hyperparams.yaml").is_file():
            raise ModelUnavailableError(f"emotion model {path} has no hyperparams.yaml; {_HOW_TO}")
        return path.resolve()
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        raise ModelUnavailableError(f"emotion model {model!r} is not a model directory; {_HOW_TO}")
    return _from_hf_cache(model, "emotion model", _HOW_TO)


def _from_hf_cache(repo: str, what: str, how_to: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, bad repo ids, ...: all mean "not available offline"
        raise ModelUnavailableError(f"{what} {repo!r} is neither a folder nor in the local HF cache "
                                    f"({type(e).__name__}); {how_to}") from e


def _yaml_value(text: str, key: str) -> str | None:
    """A top-level scalar of a hyperparams.yaml (without resolving tags)."""
    match = re.search(rf"^{re.escape(key)}:[ \t]*([^#\n]*)", text, flags=re.MULTILINE)
    return match.group(1).strip().strip("'\"") if match else None


def _encoder_dir(source: str, model_dir: Path) -> Path:
    """The local folder of the wav2vec2 encoder named by ``source`` (folder, relative folder or cached repo id)."""
    for candidate in (Path(source).expanduser(), model_dir / source):
        if candidate.is_dir():
            return candidate.resolve()
    return _from_hf_cache(
        source, "wav2vec2 encoder",
        f"download it into the HF cache (huggingface-cli download {source}) or a folder and set wav2vec2_hub in "
        f"{model_dir / 'hyperparams.yaml'} to that folder",
    )


def _legacy_class_path() -> None:
    """Let pre-1.0 yamls (``speechbrain.lobes.models.huggingface_wav2vec.HuggingFaceWav2Vec2``) load on SpeechBrain 1.x.

    The old class took ``pretrain`` (whether to load the hub weights before the checkpoint); the checkpoint replaces
    every weight either way, so the flag is dropped.
    """
    import sys
    import types

    name = "speechbrain.lobes.models.huggingface_wav2vec"
    if name in sys.modules:
        return
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

    class HuggingFaceWav2Vec2(Wav2Vec2):
        def __init__(self, source, save_path, *args, pretrain=True, **kwargs):
            super().__init__(source, save_path, *args, **kwargs)

    import speechbrain.lobes.models as parent

    module = types.ModuleType(name)
    module.HuggingFaceWav2Vec2 = HuggingFaceWav2Vec2  # type: ignore[attr-defined]
    sys.modules[name] = module
    parent.huggingface_wav2vec = module  # hyperpyyaml resolves class paths by attribute lookup from the package


class _Classifier:
    """A loaded SpeechBrain emotion model: waveform → probabilities over its labels."""

    def __init__(self, config: EmotionConfig) -> None:
        import torch
        from speechbrain.inference.interfaces import Pretrained

        class EmotionInterface(Pretrained):
            # The same modules and forward as the model repository's custom_interface.py.
            MODULES_NEEDED = ["wav2vec2", "avg_pool", "output_mlp"]
            HPARAMS_NEEDED = ["label_encoder"]

            def logits(self, wavs: torch.Tensor) -> torch.Tensor:
                lens = torch.ones(wavs.shape[0], device=self.device)
                feats = self.mods.wav2vec2(wavs)
                pooled = self.mods.avg_pool(feats, lens).view(wavs.shape[0], -1)
                return self.mods.output_mlp(pooled)

        self.model_dir = _model_dir(config.model)
        text = (self.model_dir / "hyperparams.yaml").read_text(encoding="utf-8")
        if "huggingface_wav2vec.HuggingFaceWav2Vec2" in text:
            _legacy_class_path()
        overrides: dict[str, Any] = {}
        if _yaml_value(text, "pretrained_path") is not None:
            overrides["pretrained_path"] = str(self.model_dir)
        self.encoder: str | None = None
        for key in _HUB_KEYS:
            source = config.wav2vec2 or _yaml_value(text, key)
            if _yaml_value(text, key) is not None and source:
                self.encoder = str(_encoder_dir(source, self.model_dir))
                overrides[key] = self.encoder
                break
        savedir = Path(config.savedir) if config.savedir else _default_savedir(self.model_dir)
        savedir.mkdir(parents=True, exist_ok=True)
        # The wav2vec2 lobe's save_path (relative in the real yaml) is only a download cache: with a local encoder
        # folder nothing is written there.
        try:
            self.interface = EmotionInterface.from_hparams(
                source=str(self.model_dir), savedir=str(savedir), overrides=overrides,
                run_opts={"device": config.device},
            )
        except ModelUnavailableError:
            raise
        except Exception as e:
            raise ModelUnavailableError(
                f"cannot load the SpeechBrain emotion model from {self.model_dir}: {type(e).__name__}: "
                f"{one_line(e)}; {_HOW_TO}"
            ) from e
        self.interface.eval()
        encoder = self.interface.hparams.label_encoder
        self.labels = [str(encoder.ind2lab[i]) for i in range(len(encoder))]
        self.device = config.device

    def __call__(self, audio: np.ndarray) -> dict[str, float]:
        import torch

        # SpeechBrain's StatisticsPooling adds ~1e-5 Gaussian noise to the mean (even in eval); a fixed seed in a
        # forked RNG makes scores reproducible and leaves the caller's random state alone.
        gpus = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.inference_mode(), torch.random.fork_rng(devices=gpus):
            torch.manual_seed(0)
            wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(self.device)
            logits = self.interface.logits(wav)[0]
            if logits.shape[-1] != len(self.labels):
                raise RuntimeError(f"model gives {logits.shape[-1]} outputs for {len(self.labels)} labels")
            probs = torch.softmax(logits.float(), dim=-1).cpu().numpy()
        return {label: float(p) for label, p in zip(self.labels, probs)}


def _default_savedir(model_dir: Path) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wavalign" / "emotion"
    return base / hashlib.sha256(str(model_dir).encode()).hexdigest()[:16]


class EmotionScorer:
    """Emotion probabilities of speech; ``value`` = probability of the target emotion named in ``sample.meta``."""

    name = "emotion"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = SAMPLE_RATE
    min_seconds = 0.25

    def __init__(self, config: EmotionConfig | None = None, **overrides: Any):
        self.config = replace(config or EmotionConfig(), **overrides)
        self._classifier: _Classifier | None = None

    def prepare(self) -> None:
        """Load the model now, so a missing model is one clear error before any item is scored."""
        self._model()

    def _model(self) -> _Classifier:
        if self._classifier is None:
            cfg = self.config
            self._classifier = cached(("speechbrain-emotion", cfg.model, cfg.wav2vec2, cfg.device),
                                      lambda: _Classifier(cfg))
        return self._classifier

    def target(self, sample: Sample) -> str | None:
        """The emotion ``sample.meta`` asks for, as written (None when no target key has a value)."""
        for key in self.config.target_keys:
            value = sample.meta.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        return None

    def info(self) -> ScorerInfo:
        settings: dict[str, Any] = asdict(self.config)
        settings["target_keys"] = list(self.config.target_keys)
        if self._classifier is not None:
            settings["model_dir"] = str(self._classifier.model_dir)
            settings["wav2vec2_dir"] = self._classifier.encoder
            settings["labels"] = list(self._classifier.labels)
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, settings)

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        todo, audios, problems = usable_audio(samples, SAMPLE_RATE, self.min_seconds, self.name)
        results: list[Score | None] = [Score.failed(problems[i]) if i in problems else None
                                       for i in range(len(samples))]
        model = self._model()
        for i, audio in zip(todo, audios):
            try:
                probs = model(audio)
            except RuntimeError as e:  # an inference failure on one item is that item's error
                results[i] = Score.failed(f"emotion: {one_line(e)}")
                continue
            label = max(probs, key=probs.__getitem__)
            metrics: dict[str, Any] = {
                "probs": probs, "label": label, "label_name": LABEL_NAMES.get(label, label),
                "target": None, "p_target": None,
            }
            wanted = self.target(samples[i])
            if wanted is None:
                results[i] = Score(value=None, metrics=metrics, error=NO_TARGET)
                continue
            target = self.config.aliases.get(wanted.lower(), wanted.lower())
            if target not in probs:
                results[i] = Score(value=None, metrics=metrics, error=(
                    f"target emotion {wanted!r} is not one of the model's labels ({', '.join(probs)})"
                ))
                continue
            metrics["target"] = target
            metrics["p_target"] = probs[target]
            results[i] = Score(value=float(np.clip(probs[target], 0.0, 1.0)), metrics=metrics)
        return results  # type: ignore[return-value]


__all__ = ["EmotionScorer", "EmotionConfig", "ModelUnavailableError", "DEFAULT_ALIASES", "LABEL_NAMES"]
