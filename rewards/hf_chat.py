"""A local transformers chat model (the judge's ``hf`` backend): load from a path, generate replies in batches.

Loading never downloads (``local_files_only=True``): ``path`` is a model directory (``config.json``, weights,
tokenizer with a chat template) or, with ``gguf_file``, a directory holding that GGUF checkpoint (a path to a
``.gguf`` file is split into both). GGUF weights are de-quantised by transformers (needs the ``gguf`` and
``accelerate`` packages). ``dtype="auto"`` is bfloat16 on CUDA and float32 on CPU. Models are shared per
(path, gguf_file, device, dtype) through `rewards.models.cached`.

Generation renders each conversation with the tokenizer's chat template (``add_generation_prompt=True``; a
template that rejects the system role gets the system text prepended to the first user message), pads on the
left and generates a batch at once. Temperature 0 is greedy. Otherwise every row samples with its own
``torch.Generator`` seeded with ``seed + k`` (sample k of a request), so a row's reply does not depend on the
other rows' random draws; numerics can still differ slightly with batch composition (padding changes shapes).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewards.models import ModelUnavailableError, cached, sha256_file

DTYPES = ("auto", "float32", "bfloat16", "float16")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def split_path(path: str | Path, gguf_file: str | None) -> tuple[Path, str | None]:
    """(model directory, GGUF file name inside it); a path to a ``.gguf`` file is split into both."""
    p = Path(path).expanduser()
    if gguf_file is None and p.suffix.lower() == ".gguf":
        return p.parent.resolve(), p.name
    return p.resolve(), gguf_file


def resolve_dtype(device: str, dtype: str = "auto") -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def model_identity(path: str | Path, gguf_file: str | None = None) -> dict[str, Any]:
    """What identifies the weights' content, without loading them: the sha256 of the GGUF file or of the single
    weights file; for sharded weights, the sha256 of config.json and the shard index. Raises if the path is
    missing."""
    root, gguf = split_path(path, gguf_file)
    if not root.is_dir():
        raise ModelUnavailableError(
            f"hf judge model path {root} does not exist or is not a directory; give the local directory of a "
            "transformers chat model (downloads are never attempted), or a .gguf file / gguf_file=..."
        )
    if gguf is not None:
        target = root / gguf
        if not target.is_file():
            raise ModelUnavailableError(f"hf judge: GGUF file {target} is missing")
        return {"kind": "gguf", "file": gguf, "sha256": sha256_file(target)}
    config = root / "config.json"
    if not config.is_file():
        raise ModelUnavailableError(f"hf judge: {root} has no config.json (not a transformers model directory)")
    weights = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
                     and not p.name.startswith("training_args"))
    if len(weights) == 1:
        return {"kind": "weights", "file": weights[0].name, "sha256": sha256_file(weights[0])}
    digest = hashlib.sha256(config.read_bytes())
    for index in sorted(root.glob("*.index.json")):
        digest.update(index.read_bytes())
    return {"kind": "config+index", "file": "config.json", "sha256": digest.hexdigest()}


@dataclass
class HFChatModel:
    """A loaded tokenizer + causal LM; `generate` answers batches of chat conversations."""

    path: Path
    gguf_file: str | None
    device: str
    dtype: str
    tokenizer: Any
    model: Any
    load_s: float
    identity: dict[str, Any]
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def chat_template_sha256(self) -> str:
        return hashlib.sha256(str(self.tokenizer.chat_template or "").encode()).hexdigest()

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text the model sees for one conversation (chat template + generation prompt)."""
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception as e:  # e.g. a template that raises on the system role (Gemma-style)
            if not messages or messages[0].get("role") != "system" or len(messages) < 2:
                raise ValueError(f"chat template failed: {e}") from e
            system, first, *rest = messages
            merged = {**first, "content": f"{system['content']}\n\n{first['content']}"}
            return self.tokenizer.apply_chat_template([merged, *rest], tokenize=False, add_generation_prompt=True)

    def generate(self, messages_batch: list[list[dict[str, Any]]], temperature: float = 0.0,
                 top_p: float | None = None, seed: int | None | list[int | None] = None,
                 max_new_tokens: int = 512, n: int = 1, prefix: str = "") -> list[list[str]]:
        """``n`` replies per conversation (row k of a conversation samples with seed + k; ``seed`` may be one per
        conversation). Greedy when ``temperature == 0`` (then the n replies are identical). ``prefix``: the start
        of every reply, written for the model after the generation prompt (a prefill); each reply begins with it."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        if not messages_batch:
            return []
        seeds = seed if isinstance(seed, list) else [seed] * len(messages_batch)
        if len(seeds) != len(messages_batch):
            raise ValueError("seed must be one int/None or one per conversation")
        texts, row_seeds = [], []
        for messages, s in zip(messages_batch, seeds):
            text = self.render(messages) + prefix
            for k in range(n):
                texts.append(text)
                row_seeds.append(None if s is None else s + k)
        tok = self.tokenizer
        with self._lock:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            eos = self.model.generation_config.eos_token_id
            eos_ids = sorted({*(eos if isinstance(eos, list) else [eos]), tok.eos_token_id} - {None})
            config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                      pad_token_id=tok.pad_token_id, eos_token_id=eos_ids or None)
            processors = LogitsProcessorList()
            if temperature > 0:
                processors.append(_SeededSampler(row_seeds, temperature, top_p, self.model.device))
            with torch.inference_mode():
                out = self.model.generate(**enc, generation_config=config, logits_processor=processors)
        new = out[:, enc["input_ids"].shape[1]:]
        replies = tok.batch_decode(new, skip_special_tokens=True)
        replies = [prefix + r for r in replies]
        return [replies[i * n:(i + 1) * n] for i in range(len(messages_batch))]


class _SeededSampler:
    """Samples each row with its own generator and returns one-hot logits, so greedy decoding keeps the draw."""

    def __init__(self, seeds: list[int | None], temperature: float, top_p: float | None, device: Any):
        import torch

        self.generators = []
        for s in seeds:
            g = torch.Generator(device=device)
            if s is None:
                g.seed()  # no seed: not reproducible, as with a server that gets none
            else:
                g.manual_seed(int(s) % 2**63)
            self.generators.append(g)
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.temperature
        if self.top_p is not None and self.top_p < 1:
            ordered, index = torch.sort(logits, descending=True, dim=-1)
            cum = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
            drop = cum - torch.softmax(ordered, dim=-1) >= self.top_p  # keep the smallest set reaching top_p
            ordered = ordered.masked_fill(drop, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(1, index, ordered)
        probs = torch.softmax(logits, dim=-1)
        picks = torch.stack([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(self.generators)])
        return torch.full_like(scores, float("-inf")).scatter(1, picks, 0.0)


def load_chat_model(path: str | Path, gguf_file: str | None = None, device: str = "cpu",
                    dtype: str = "auto") -> HFChatModel:
    """The tokenizer and model at ``path`` (shared per path, GGUF file, device and dtype); never downloads."""
    root, gguf = split_path(path, gguf_file)
    dtype = resolve_dtype(device, dtype)
    identity = model_identity(root, gguf)  # raises ModelUnavailableError for a missing path or file
    return cached(("hf-chat", str(root), gguf, device, dtype), lambda: _load(root, gguf, device, dtype, identity))


def _load(root: Path, gguf: str | None, device: str, dtype: str, identity: dict[str, Any]) -> HFChatModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailableError(f"hf judge: device {device!r} requested but CUDA is not available")
    start = time.perf_counter()
    kwargs: dict[str, Any] = {"local_files_only": True}
    if gguf is not None:
        kwargs["gguf_file"] = gguf
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(root), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(root), dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError, ImportError) as e:
        raise ModelUnavailableError(f"hf judge: cannot load the model at {root}"
                                    + (f" (gguf_file={gguf})" if gguf else "") + f": {e}") from e
    if not tokenizer.chat_template:
        raise ModelUnavailableError(f"hf judge: the tokenizer at {root} has no chat template (not a chat model?)")
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return HFChatModel(root, gguf, device, dtype, tokenizer, model, time.perf_counter() - start, identity)


__all__ = ["HFChatModel", "load_chat_model", "model_identity", "resolve_dtype", "split_path"]
