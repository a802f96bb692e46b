"""The `tiny` policy: a random-initialised small LlamaForCausalLM (the real class) with an in-memory byte-level BPE
tokenizer and a tone codec, for smoke runs of the loop in seconds on a CPU. It speaks tones, not words: enough for
the mechanics (rollouts, channels, rewards from real scorers on real waveforms, losses, checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from align.building import CHATML, bpe_tokenizer
from align.interleaved.policy import InterleavedPolicy, extend_vocab


class ToneCodec:
    """Speech token k → a 40 ms tone at 110 · 2^(k/12) Hz (a semitone per token id), with 5 ms fades.

    ``encode_text`` maps each letter to a token (its alphabet index, two frames) so a reference answer has a
    deterministic "speech" whose pitch contour follows the text; it cannot tokenize real audio.
    """

    encodes_audio = False  # encode_audio always returns None

    def __init__(self, vocab_size: int = 48, frame_s: float = 0.04, sample_rate: int = 16000):
        self.vocab_size = vocab_size
        self.frame_s = frame_s
        self.sample_rate = sample_rate

    def encode_text(self, text: str) -> list[int]:
        out = []
        for ch in text.lower():
            if ch.isalpha():
                out += [(ord(ch) - ord("a")) % self.vocab_size] * 2
        return out

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> list[int] | None:
        return None

    def decode(self, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        n = int(self.frame_s * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005)
        frames = [0.3 * fade * np.sin(2 * np.pi * 110 * 2 ** (int(k) / 12) * t) for k in tokens]
        audio = np.concatenate(frames) if frames else np.zeros(0)
        return audio.astype(np.float32), self.sample_rate

    def info(self) -> dict[str, Any]:
        return {"name": "tone", "vocab_size": self.vocab_size, "frame_s": self.frame_s}


def build_tiny_policy(corpus: Sequence[str], *, hidden_size: int = 64, layers: int = 2, vocab_size: int = 400,
                      text_chunk: int = 4, speech_chunk: int = 8, speech_vocab: int = 48, seed: int = 0
                      ) -> InterleavedPolicy:
    """A tiny random LlamaForCausalLM + a BPE tokenizer trained on ``corpus`` + speech tokens for a `ToneCodec`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer(corpus, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size=vocab_size,
                              eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    codec = ToneCodec(vocab_size=speech_vocab)
    spec = extend_vocab(model, tokenizer, codec.vocab_size, text_chunk=text_chunk, speech_chunk=speech_chunk)
    return InterleavedPolicy(model, tokenizer, spec, codec)
