"""Speech in, text out: eval adapters for the audio-language models VoiceBench users run most, on transformers'
native classes (``--model qwen2-audio``, ``voxtral``, ``qwen3-omni-thinker``).

- ``qwen2-audio``: ``Qwen2AudioForConditionalGeneration``, default ``Qwen/Qwen2-Audio-7B-Instruct``;
- ``voxtral``: ``VoxtralForConditionalGeneration``, default ``mistralai/Voxtral-Mini-3B-2507`` (its tokenizer needs
  ``pip install 'mistral-common[audio]'``);
- ``qwen3-omni-thinker``: ``Qwen3OmniMoeThinkerForConditionalGeneration``, default
  ``Qwen/Qwen3-Omni-30B-A3B-Instruct`` (its processor needs ``torchvision``, even for audio).

One base class, `SpeechLMAdapter`, does the work: each request becomes a chat conversation in the model's own chat
template (the request's or the adapter's system prompt, the earlier turns of ``Request.history``, then the
question), audio as the template's audio parts; the processor turns a batch of conversations into token ids and
log-mel features, ``generate`` decodes greedily, and the new tokens are the answer (``Response.text``; these models
do not speak, so ``Response.audio`` is None). A spoken user turn (the question included) goes in as audio only, as
VoiceBench does: its transcript is not given, so the model has to listen. A text-only turn goes in as text; an
assistant turn as its text (an assistant turn with audio and no text is that item's error: these models take their
own earlier answers as text).

``path`` is a Hub name or a local folder (weights, config, processor files). Loading reads the local cache first
(``local_files_only``) and goes to the Hub only when that fails and ``HF_HUB_OFFLINE`` is not set; a missing model,
a missing package or a folder that holds another architecture is one `AdapterError` line. ``dtype="auto"`` is
bfloat16 on CUDA, float32 on CPU. A Qwen3-Omni folder may hold the whole model (thinker, talker, code2wav: the
talker is not loaded) or the thinker alone.
"""

from __future__ import annotations

import base64
import io
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalsuite.adapters import AdapterError, Request, Response, Turn, request_audio
from rewards.audio import AudioError
from rewards.base import one_line

SAMPLE_RATE = 16000  # all three feature extractors are Whisper's, at 16 kHz


class SpeechLMAdapter:
    """A speech-in, text-out transformers model answering requests greedily in batches (see the module docstring).

    Subclasses set the model family: ``name``, ``default_path``, ``model_types`` (the ``config.json`` model types
    this class loads) and ``model_class`` (its transformers class name), and may override `_model_inputs` (how a
    batch of conversations becomes the model's inputs) and `_load_model`.

    Args:
        path: a Hub name or a local folder (None: ``default_path``).
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:1``...
        max_new_tokens: the longest answer, in tokens.
        batch_size: conversations per ``generate`` call.
        system_prompt: used when a request brings none (None: the chat template's own default, if any).
    """

    speaks = False  # text out: the speech scorers do not apply

    name = "speech-lm"
    default_path = ""
    model_types: tuple[str, ...] = ()
    model_class = ""
    needs: tuple[tuple[str, str], ...] = ()  # (importable module, pip requirement) the processor needs

    def __init__(self, path: str | None = None, dtype: str = "auto", device: str = "cpu", max_new_tokens: int = 256,
                 batch_size: int = 4, system_prompt: str | None = None):
        from rewards.hf_chat import DTYPES

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be >= 1")
        self.path = str(path or self.default_path)
        self.dtype, self.device = dtype, device
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.system_prompt = system_prompt
        self.processor: Any = None
        self.model: Any = None
        self._resolved: dict[str, Any] = {}

    # -- loading -------------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the processor and the model (once); every problem is one `AdapterError` line."""
        if self.model is not None:
            return
        import importlib.util

        for module, requirement in self.needs:
            if importlib.util.find_spec(module) is None:
                raise AdapterError(f"{self.name}: its processor needs {module} (pip install '{requirement}')")
        import torch
        from transformers import AutoConfig, AutoProcessor

        from rewards.hf_chat import resolve_dtype

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise AdapterError(f"{self.name}: device {self.device!r} requested but CUDA is not available")
        local = Path(self.path).expanduser()
        if Path(self.path).is_absolute() or self.path.startswith((".", "~")) or local.exists():
            if not (local / "config.json").is_file():
                raise AdapterError(f"{self.name}: {local} is not a model folder (no config.json)")
            attempts = [{"local_files_only": True}]
            where = str(local.resolve())
        else:
            # the local cache first (no network), then the Hub unless offline
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
            attempts = [{"local_files_only": True}] + ([] if offline else [{"local_files_only": False}])
            where = self.path
        dtype = resolve_dtype(self.device, self.dtype)
        error: Exception | None = None
        for kwargs in attempts:
            try:
                config = AutoConfig.from_pretrained(where, **kwargs)
                self._check_architecture(config, where)
                processor = AutoProcessor.from_pretrained(where, **kwargs)
                model = self._load_model(where, config, getattr(torch, dtype), kwargs)
                break
            except AdapterError:
                raise
            except (OSError, ValueError, ImportError, KeyError) as e:  # missing files, no network, bad folder
                error = e
        else:
            raise AdapterError(f"{self.name}: cannot load {where} ({one_line(error)}); download it where there is "
                               f"internet (hf download {self.path}) and pass path=FOLDER") from error
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "padding_side"):
            tokenizer.padding_side = "left"  # generate continues every row from its own last token
        self.processor, self.model = processor, model.to(self.device).eval()
        self._resolved = {"path": where, "model_type": config.model_type, "dtype": dtype,
                          "commit": getattr(config, "_commit_hash", None)}

    def _check_architecture(self, config: Any, where: str) -> None:
        if config.model_type not in self.model_types:
            raise AdapterError(f"{self.name}: {where} holds a '{config.model_type}' model, not "
                               f"{' or '.join(repr(t) for t in self.model_types)} ({self.model_class})")

    def _load_model(self, where: str, config: Any, dtype: Any, kwargs: dict[str, Any]) -> Any:
        import transformers

        return getattr(transformers, self.model_class).from_pretrained(where, dtype=dtype, **kwargs)

    def info(self) -> dict[str, Any]:
        return {"adapter": self.name, "model_class": self.model_class, "path": self.path, "dtype": self.dtype,
                "device": self.device, "max_new_tokens": self.max_new_tokens, "batch_size": self.batch_size,
                "system_prompt": self.system_prompt, "decoding": "greedy", "history": "earlier chat turns",
                **({"resolved": self._resolved} if self._resolved else {})}

    # -- answering -----------------------------------------------------------------------------------------------
    def respond(self, requests: Sequence[Request]) -> list[Response]:
        self.prepare()
        responses = [Response(meta={}) for _ in requests]
        conversations: list[list[dict[str, Any]] | None] = []
        for request, response in zip(requests, responses):
            try:
                conversations.append(self.conversation(request))
                if request.history:
                    response.meta["history_turns"] = len(request.history)
            except (AudioError, ValueError) as e:
                response.error = one_line(e)
                conversations.append(None)
        todo = [k for k, c in enumerate(conversations) if c is not None]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            try:
                self._answer([conversations[k] for k in chunk], [responses[k] for k in chunk])
            except Exception as e:  # noqa: BLE001 - one conversation the processor or model rejects fails alone
                if len(chunk) == 1:
                    responses[chunk[0]].error = f"{self.name} failed: {type(e).__name__}: {one_line(e)}"
                    continue
                for k in chunk:
                    try:
                        self._answer([conversations[k]], [responses[k]])
                    except Exception as e1:  # noqa: BLE001
                        responses[k].error = f"{self.name} failed: {type(e1).__name__}: {one_line(e1)}"
        return responses

    def _answer(self, conversations: list[list[dict[str, Any]]], responses: list[Response]) -> None:
        """One generate call: greedy answers of ``conversations`` into ``responses``."""
        import torch

        begin = time.perf_counter()
        inputs = self._model_inputs(conversations).to(self.device)
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=1)
        sequences = out.sequences if hasattr(out, "sequences") else out
        new = sequences[:, inputs["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new, skip_special_tokens=True)
        seconds = round((time.perf_counter() - begin) / len(conversations), 4)
        for response, text in zip(responses, texts):
            response.text = text.strip()
            response.meta.update(seconds=seconds, new_tokens=int(new.shape[1]))
            if not response.text:
                response.error = "the model's answer is empty"

    def conversation(self, request: Request) -> list[dict[str, Any]]:
        """The request as chat messages: system prompt, earlier turns, the question; audio parts carry 16 kHz
        float32 arrays under ``audio``. Raises `ValueError`/`AudioError` for a request that cannot be asked."""
        messages: list[dict[str, Any]] = []
        system = request.system_prompt or self.system_prompt
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        if request.audio is None and not (request.text or "").strip():
            raise ValueError("the request has neither audio nor text")
        question = Turn("user", request.text, request.audio, request.sample_rate)
        for k, turn in enumerate((*request.history, question)):
            where = "the question" if k == len(request.history) else f"history turn {k + 1}"
            if turn.role == "assistant":
                if not (turn.text or "").strip():
                    raise ValueError(f"{where}: an assistant turn without text ({self.name} takes its earlier "
                                     "answers as text)")
                messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.text.strip()}]})
            elif turn.audio is not None:
                try:
                    audio = request_audio(turn, SAMPLE_RATE)
                except AudioError as e:
                    raise AudioError(e.kind, f"{where} audio: {e.args[0]}") from e
                messages.append({"role": "user", "content": [{"type": "audio", "audio": audio}]})
            else:
                messages.append({"role": "user", "content": [{"type": "text", "text": turn.text.strip()}]})
        return messages

    def _model_inputs(self, conversations: list[list[dict[str, Any]]]) -> Any:
        """Token ids, attention mask and audio features of a batch: each conversation rendered by the processor's
        chat template (audio parts become its audio placeholders), then the processor expands the placeholders
        and computes the log-mel features of the audio in order."""
        texts, audios = [], []
        for messages in conversations:
            rendered = [{**m, "content": [{"type": "audio"} if p["type"] == "audio" else p for p in m["content"]]}
                        for m in messages]
            texts.append(self.processor.apply_chat_template(rendered, tokenize=False, add_generation_prompt=True))
            audios += [p["audio"] for m in messages for p in m["content"] if p["type"] == "audio"]
        kwargs: dict[str, Any] = {"audio": audios, "sampling_rate": SAMPLE_RATE} if audios else {}
        return self.processor(text=texts, padding=True, return_tensors="pt", **kwargs)


class Qwen2AudioAdapter(SpeechLMAdapter):
    """Qwen2-Audio-Instruct (``--model qwen2-audio``)."""

    name = "qwen2-audio"
    default_path = "Qwen/Qwen2-Audio-7B-Instruct"
    model_types = ("qwen2_audio",)
    model_class = "Qwen2AudioForConditionalGeneration"


class VoxtralAdapter(SpeechLMAdapter):
    """Voxtral (``--model voxtral``): its processor renders conversations with mistral-common's tokenizer, which
    takes audio parts as base64-encoded files (written here as 32-bit float WAV, so no precision is lost). Its
    earlier tokenizers refuse a system message in a conversation with audio: the system prompt then leads the first
    user message."""

    name = "voxtral"
    default_path = "mistralai/Voxtral-Mini-3B-2507"
    model_types = ("voxtral",)
    model_class = "VoxtralForConditionalGeneration"
    needs = (("mistral_common", "mistral-common[audio]>=1.8.1"),)

    def conversation(self, request: Request) -> list[dict[str, Any]]:
        """As the base class; mistral-common's tokenizers before v13 refuse a system message beside audio, so
        there the system prompt goes first in the first user message, as a text part."""
        messages = super().conversation(request)
        has_audio = any(p["type"] == "audio" for m in messages for p in m["content"])
        if messages[0]["role"] == "system" and has_audio and self._tokenizer_version() < 13:
            system, messages = messages[0], messages[1:]
            first = next(m for m in messages if m["role"] == "user")
            first["content"] = [*system["content"], *first["content"]]
        return messages

    def _tokenizer_version(self) -> int:
        try:
            version = self.processor.tokenizer.tokenizer.instruct_tokenizer.tokenizer.version.value
            return int(str(version).lstrip("v").split("m")[0])
        except (AttributeError, ValueError):
            return 0

    def _model_inputs(self, conversations: list[list[dict[str, Any]]]) -> Any:
        import soundfile as sf

        def part(p: dict[str, Any]) -> dict[str, Any]:
            if p["type"] != "audio":
                return p
            buffer = io.BytesIO()
            sf.write(buffer, p["audio"], SAMPLE_RATE, format="WAV", subtype="FLOAT")
            return {"type": "audio", "base64": base64.b64encode(buffer.getvalue()).decode("ascii")}

        rendered = [[{**m, "content": [part(p) for p in m["content"]]} for m in messages]
                    for messages in conversations]
        return self.processor.apply_chat_template(rendered, tokenize=True, return_dict=True)


class Qwen3OmniThinkerAdapter(SpeechLMAdapter):
    """Qwen3-Omni's thinker (``--model qwen3-omni-thinker``): the text-producing half of the omni model."""

    name = "qwen3-omni-thinker"
    default_path = "Qwen/Qwen3-Omni-30B-A3B-Instruct"
    model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    model_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    needs = (("torchvision", "torchvision"),)  # the processor's video part is built even for audio

    def _load_model(self, where: str, config: Any, dtype: Any, kwargs: dict[str, Any]) -> Any:
        from transformers import Qwen3OmniMoeForConditionalGeneration, Qwen3OmniMoeThinkerForConditionalGeneration

        if config.model_type == "qwen3_omni_moe":  # the released checkpoint: take its thinker, skip the talker
            full = Qwen3OmniMoeForConditionalGeneration.from_pretrained(where, dtype=dtype,
                                                                       enable_audio_output=False, **kwargs)
            return full.thinker
        return Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(where, dtype=dtype, **kwargs)


__all__ = ["Qwen2AudioAdapter", "Qwen3OmniThinkerAdapter", "SpeechLMAdapter", "VoxtralAdapter"]
