"""The policy adapter protocol: what the training loop needs from a spoken dialogue model, whatever its architecture.

The loop never looks inside a model. It asks an adapter to build prompts, sample rollouts, lay out reference
answers, compute teacher-forced log-probs and turn speech tokens into a waveform. The unit is a `Trajectory`: a
completion made of named token streams (one interleaved stream; a thinker's text and a talker's codes; a text stream
and K codebook streams), seen by the losses as one flat sequence of positions in which every position carries a
channel. So the GRPO term reaches only text positions and the SFT term every position, whatever the layout
(WavAlign's point: sequence-level rewards optimise the text channel; the speech channel is anchored by SFT).

Channels:
    TEXT: the text channel (including the token that ends it and the final EOS).
    SPEECH: speech tokens (codec ids, talker codes, audio codebooks).
    BOUNDARY: the audio begin/end tokens. They count as speech for masking: "speech positions = ids in the
        speech-token range plus the audio boundary tokens" (the paper's code).

Adding a family: one module (or one small folder) under ``align/`` with a class implementing `PolicyAdapter`, a
factory registered in ``align.train.POLICIES`` and, for ``wavalign eval``, an eval adapter (usually a
`align.adapter.PolicyAdapter` with the family preset) registered by import path in ``evalsuite.adapters.BUILTIN``.
`align.interleaved` is the simplest family to read first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

TEXT = 0
SPEECH = 1
BOUNDARY = 2
CHANNEL_NAMES = {TEXT: "text", SPEECH: "speech", BOUNDARY: "boundary"}
PAD_CHANNEL = -1  # channel value at padded positions of batched tensors (never equal to a real channel)


@dataclass
class Trajectory:
    """One prompt + completion as the model sees it, the completion split into named streams and channels.

    The losses see ``completion_ids`` / ``channels`` / ``weights``: the completion's positions flattened in the
    order the policy's ``logprobs`` returns them. ``streams`` names the consecutive spans of that flat sequence, so
    a family with several streams lays them end to end (e.g. ``text`` then ``talker``; ``text`` then
    ``audio_0`` .. ``audio_7``); a single-stream family has one span, ``tokens``.

    Attributes:
        prompt_ids: the prompt as the family built it (`PolicyAdapter.build_prompt`): token ids for a single-stream
            LM, a family's own prompt object otherwise. The loop never looks inside.
        completion_ids: the completion's token ids, all streams flattened; a text stream ends with EOS when finished.
        channels: one per completion position: TEXT, SPEECH or BOUNDARY.
        text: the decoded text channel.
        speech_tokens: the speech channel as the family's ``decode_speech`` takes it (codec ids for a single
            stream, one list per codebook for parallel streams).
        finished: the completion ended (EOS) rather than being cut at max_new_tokens.
        streams: name -> (start, end) span of the flat completion (default: one stream ``tokens``).
        weights: SFT weight per completion position (None: all 1), e.g. per-codebook weights.
    """

    prompt_ids: Any
    completion_ids: list[int]
    channels: list[int]
    text: str
    speech_tokens: Any
    finished: bool
    streams: dict[str, tuple[int, int]] = field(default_factory=dict)
    weights: list[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.completion_ids)
        if len(self.channels) != n:
            raise ValueError(f"{len(self.channels)} channels for {n} completion tokens")
        if self.weights is not None and len(self.weights) != n:
            raise ValueError(f"{len(self.weights)} weights for {n} completion tokens")
        if not self.streams:
            self.streams = {"tokens": (0, n)}
        spans = sorted(self.streams.values())
        if spans[0][0] != 0 or spans[-1][1] != n or any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
            raise ValueError(f"streams {self.streams} do not tile the {n} completion positions")

    def count(self, channel: int) -> int:
        """Number of completion positions in ``channel``."""
        return sum(c == channel for c in self.channels)

    def stream(self, name: str) -> list[int]:
        """The ids of one named stream."""
        start, end = self.streams[name]
        return self.completion_ids[start:end]


def flat_stream(streams: Sequence[tuple[str, Sequence[int], int | Sequence[int], float]]
                ) -> tuple[list[int], list[int], dict[str, tuple[int, int]], list[float] | None]:
    """Lay named streams end to end: (ids, channels, spans, weights) for a `Trajectory`.

    Each stream is ``(name, ids, channel, weight)``; ``channel`` is one channel for the whole stream or one per id.
    ``weights`` is None when every weight is 1 (the SFT loss is then the plain token mean).
    """
    ids: list[int] = []
    channels: list[int] = []
    weights: list[float] = []
    spans: dict[str, tuple[int, int]] = {}
    for name, stream_ids, channel, weight in streams:
        start = len(ids)
        ids += [int(t) for t in stream_ids]
        channels += [int(channel)] * len(stream_ids) if isinstance(channel, int) else [int(c) for c in channel]
        weights += [float(weight)] * len(stream_ids)
        spans[name] = (start, len(ids))
    return ids, channels, spans, (None if all(w == 1.0 for w in weights) else weights)


@runtime_checkable
class SpeechCodec(Protocol):
    """Speech tokens <-> audio. A real model plugs its tokenizer/vocoder here; tests use a toy one."""

    vocab_size: int  # speech token ids are 0 .. vocab_size-1
    # Optional class attribute ``encodes_audio = False``: encode_audio always returns None (spoken turns then
    # enter as transcripts and the policy does not claim to hear audio).

    def encode_text(self, text: str) -> list[int] | None:
        """Speech tokens that say ``text`` (a TTS front-end: builds SFT targets from reference text), or None when
        the codec has none (a neural codec: the reference speech must then come as audio)."""
        ...

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> list[int] | None:
        """Speech tokens of a waveform, or None when this codec cannot tokenize audio."""
        ...

    def decode(self, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """Mono float32 waveform and its sample rate."""
        ...

    def info(self) -> dict[str, Any]: ...


@runtime_checkable
class PolicyAdapter(Protocol):
    """What the training loop (and `align.adapter.PolicyAdapter`, its eval front-end) needs from a model.

    ``model`` is the torch module being trained (possibly wrapped by peft/accelerate): the optimiser trains its
    parameters that require grad and checkpoints hold them. ``family`` names the family in results;
    ``hears_audio`` says whether ``build_prompt`` takes spoken turns (False: the loop and the eval adapter feed the
    question's transcript instead, and a spoken row without one is reported and skipped).
    """

    model: Any
    tokenizer: Any
    family: str
    hears_audio: bool

    def build_prompt(self, messages: list[dict], audios: list | None = None) -> Any:
        """A conversation ready for the assistant's answer (text turns via the chat template).

        An ``<audio>`` placeholder in a message's text (or a ``{"type": "audio"}`` part) takes the next item of
        ``audios``: a path, a `rewards.audio.Audio` or a ``(samples, rate)`` pair. Returns what ``generate``,
        ``sft_target`` and ``logprobs`` take as the prompt (token ids for a single-stream LM).
        """
        ...

    def generate(
        self,
        prompts: list[Any],
        n: int,
        *,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> list[list[Trajectory]]:
        """``n`` sampled rollouts per prompt, grouped per prompt, in prompt order (temperature 0: greedy)."""
        ...

    def sft_target(self, prompt_ids: Any, text: str, speech_tokens: Any = None, *,
                   audio: tuple[np.ndarray, int] | None = None) -> Trajectory:
        """The reference answer laid out exactly as the model would generate it.

        Its speech: ``speech_tokens`` when given, else the reference ``audio`` (samples, rate) encoded by the
        family's codec when it can, else what the family makes from the text (and says in ``info()``).
        """
        ...

    def logprobs(self, trajs: Sequence[Trajectory], *, temperature: float = 1.0) -> tuple[Any, Any, Any]:
        """Teacher-forced log-probs of completion tokens: (logp [B,T] float, mask [B,T] bool, channels [B,T] long).

        Position j of row i is position j of ``trajs[i].completion_ids`` (all streams flattened). Differentiable;
        right-padded (mask marks real positions; padded channels are PAD_CHANNEL). ``temperature`` divides the
        logits first (1.0: the model's own distribution). It must follow the computation ``generate`` samples from.
        """
        ...

    def decode_speech(self, speech_tokens: Any) -> tuple[np.ndarray, int]:
        """Waveform (mono float32) and sample rate of a trajectory's ``speech_tokens``."""
        ...

    def info(self) -> dict[str, Any]:
        """Model, tokenizer, layout and codec settings, for results and checkpoints."""
        ...


def load_codec(spec: str | SpeechCodec, **kwargs: Any) -> SpeechCodec:
    """A codec from an import path ``package.module:Class`` (called with ``kwargs``), or a codec instance as is."""
    if not isinstance(spec, str):
        return spec
    import importlib

    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"codec {spec!r}: expected an import path 'package.module:Class'")
    try:
        codec = getattr(importlib.import_module(module), name)(**kwargs)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot import codec {spec!r}: {e}") from e
    missing = [m for m in ("encode_audio", "decode", "info") if not callable(getattr(codec, m, None))]
    if missing or not isinstance(getattr(codec, "vocab_size", None), int):
        raise ValueError(f"codec {spec!r} does not fit the SpeechCodec protocol (needs vocab_size, encode_audio, "
                         f"decode, info; missing {missing or ['vocab_size']})")
    return codec


def as_audio(audio: Any) -> tuple[np.ndarray, int]:
    """(mono float32 samples, rate) of a path, a `rewards.audio.Audio` or a ``(samples, rate)`` pair."""
    from pathlib import Path

    if isinstance(audio, (str, Path)):
        from rewards.audio import load_audio

        audio = load_audio(audio)
    if hasattr(audio, "samples") and hasattr(audio, "sample_rate"):
        return np.asarray(audio.samples, dtype=np.float32), int(audio.sample_rate)
    samples, rate = audio
    return np.asarray(samples, dtype=np.float32), int(rate)


def load_weights(model: Any, checkpoint: Any) -> int:
    """Load an align run's ``trainer.pt`` (its ``weights``; or a bare state dict) into ``model``; returns the count."""
    from pathlib import Path

    import torch

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give an align run's checkpoint/trainer.pt)")
    state = torch.load(path, map_location="cpu", weights_only=False)
    weights = state.get("weights", state) if isinstance(state, dict) else None
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"checkpoint {path} holds no weights")
    if any("lora_" in k or k.startswith("base_model.") for k in weights):
        raise ValueError(f"checkpoint {path} holds LoRA adapters; warm-start a policy from a full fine-tune run "
                         "(lora: null)")
    result = model.load_state_dict(weights, strict=False)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint {path} does not fit the model: unexpected {result.unexpected_keys[:3]}")
    return len(weights)
