"""The policy adapter protocol: what the training loop needs from a spoken dialogue model, whatever its architecture.

The loop never looks inside a model. It asks an adapter to build prompts, sample rollouts, lay out reference
answers, compute teacher-forced log-probs and turn speech tokens into a waveform. Every completion position carries a
channel so the losses can treat text and speech differently (WavAlign's point: sequence-level rewards optimise the
text channel; the speech channel is anchored by SFT).

Channels:
    TEXT: the text channel (including the token that ends it and the final EOS).
    SPEECH: ids in the speech-token range.
    BOUNDARY: the audio begin/end tokens. They count as speech for masking: "speech positions = ids in the
        speech-token range plus the audio boundary tokens" (the paper's code).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

TEXT = 0
SPEECH = 1
BOUNDARY = 2
CHANNEL_NAMES = {TEXT: "text", SPEECH: "speech", BOUNDARY: "boundary"}
PAD_CHANNEL = -1  # channel value at padded positions of batched tensors (never equal to a real channel)


@dataclass
class Trajectory:
    """One prompt + completion as the model sees it, with the completion split into its channels.

    Attributes:
        prompt_ids: the prompt token ids (chat template applied, audio turns already encoded).
        completion_ids: generated or target token ids; ends with EOS when finished.
        channels: one per completion position: TEXT, SPEECH or BOUNDARY.
        text: the decoded text channel.
        speech_tokens: the speech channel as codec ids (0-based, without the vocabulary offset).
        finished: the completion ended with EOS (False: cut at max_new_tokens).
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    channels: list[int]
    text: str
    speech_tokens: list[int]
    finished: bool

    def __post_init__(self) -> None:
        if len(self.channels) != len(self.completion_ids):
            raise ValueError(f"{len(self.channels)} channels for {len(self.completion_ids)} completion tokens")

    def count(self, channel: int) -> int:
        """Number of completion positions in ``channel``."""
        return sum(c == channel for c in self.channels)


@runtime_checkable
class SpeechCodec(Protocol):
    """Speech tokens <-> audio. A real model plugs its tokenizer/vocoder here; tests use a toy one."""

    vocab_size: int  # speech token ids are 0 .. vocab_size-1

    def encode_text(self, text: str) -> list[int]:
        """Speech tokens that say ``text`` (a TTS front-end: builds SFT targets from reference text)."""
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
    """What the training loop needs from a spoken dialogue model.

    ``model`` is the torch module being trained (possibly wrapped by peft/accelerate); ``tokenizer`` its tokenizer.
    """

    model: Any
    tokenizer: Any

    def build_prompt(self, messages: list[dict], audios: list | None = None) -> list[int]:
        """Token ids of a conversation ready for the assistant's answer (text turns via the chat template)."""
        ...

    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        *,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        seed: int | None = None,
    ) -> list[list[Trajectory]]:
        """``n`` sampled rollouts per prompt, grouped per prompt, in prompt order."""
        ...

    def sft_target(self, prompt_ids: list[int], text: str, speech_tokens: list[int] | None = None) -> Trajectory:
        """The reference answer laid out exactly as the model would generate it."""
        ...

    def logprobs(self, trajs: Sequence[Trajectory], *, temperature: float = 1.0) -> tuple[Any, Any, Any]:
        """Teacher-forced log-probs of completion tokens: (logp [B,T] float, mask [B,T] bool, channels [B,T] long).

        Differentiable; right-padded (mask marks real positions; padded channels are PAD_CHANNEL). ``temperature``
        divides the logits first (1.0: the model's own distribution).
        """
        ...

    def decode_speech(self, speech_tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """Waveform (mono float32) and sample rate of a speech channel."""
        ...

    def info(self) -> dict[str, Any]:
        """Model, tokenizer, layout and codec settings, for results and checkpoints."""
        ...
