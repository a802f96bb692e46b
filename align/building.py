"""Small pieces every family uses to build and run its models: a seeded sampling context, dtype names, the
in-memory tokenizer of the tiny test models. Nothing here knows a family."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextlib.contextmanager
def sampling(model: Any, seed: int | None) -> Iterator[None]:
    """``model`` in eval mode and, with ``seed``, torch's RNG seeded on a fork (the global state is left as it was);
    the model's train/eval mode is restored afterwards."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    fork = torch.random.fork_rng(devices=[device] if device.type == "cuda" else []) if seed is not None else None
    try:
        with fork or contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def torch_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """``auto`` (bfloat16 on CUDA, float32 elsewhere), ``float32``, ``bfloat16`` or ``float16``."""
    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def bpe_tokenizer(corpus: Sequence[str], special_tokens: Sequence[str], *, vocab_size: int = 400,
                  fallback_corpus: Sequence[str] = ("hello",), **token_names: str) -> Any:
    """A byte-level BPE tokenizer trained in memory on ``corpus`` (the tiny models' tokenizer): ``special_tokens``
    first, then the learned merges; ``token_names`` (``eos_token="<|im_end|>"``...) name its special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(list(corpus) or list(fallback_corpus), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk, **token_names)


def first_line(error: BaseException) -> str:
    """An exception's first line (for one-line errors)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
