"""Native interleaved checkpoints: LMs whose vocabulary already holds speech tokens (GLM-4-Voice, VITA-Audio).

`align.interleaved.policy` extends a text LM with wavalign's own grammar (fixed chunks, forced TEND/BOA/EOA). A
native checkpoint was trained on its own layout, so here everything is read from the tokenizer or given as config,
and nothing is forced that the checkpoint never emits:

- speech tokens: ``speech_token`` names them (``<|audio_{}|>``: ``<|audio_0|>`` .. ``<|audio_N-1|>``, N read from
  the vocabulary); their ids must be contiguous. ``<|begin_of_audio|>`` / ``<|end_of_audio|>`` are used when the
  tokenizer has them: around spoken user turns in the prompt and, with ``markers="each_run"``, around every run of
  speech in the answer.
- the interleave pattern: chunk sizes ``text_0 speech_0 text_1 speech_1 ...``, the last pair repeating.
  GLM-4-Voice: ``13 26`` (web_demo.py: "13 text token followed by 26 audio tokens"); VITA-Audio: ``1 10 4 10``
  (Boost) or ``1 4 3 8 4 10`` (Balance), its speech chunks counting the BOA/EOA around them.
- how the channels end (both checkpoints, VITA-Audio's ``text_audio_interval`` spells it out): both channels are
  cut into the pattern's chunks and paired; the last pair holds the rest of both. So while both channels last,
  full chunks alternate; the text ends when the model switches to speech before its chunk is full (or, after a
  full speech chunk, speaks on instead of writing) and the speech then continues alone; when the speech is the
  shorter channel, the last text chunk runs on and one last, short speech chunk follows. No text-end token.

Grammar (k_p, m_p: the pattern's sizes for pair p; T text, S speech; ``run(x)`` is ``BOA x EOA`` with markers,
``x`` without; EOS the checkpoint's end of turn, ``<|user|>`` for GLM-4-Voice)::

    completion := T^k_0 run(S^m_0) T^k_1 run(S^m_1) ... T^a run(S^b) EOS   the last pair: 1 <= a <= k_p or
                                                                          1 <= b <= m_p (the rest of both)
                | T* EOS | run(S+) EOS                                    one channel only

Given the text ids and speech ids the layout is unique (`NativeInterleavedPolicy.layout`), and every sequence the
sampler can produce is the layout of its own channels: SFT targets and rollouts share one pattern.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessorList

from align.adapter import PolicyAdapter as _EvalPolicyAdapter
from align.building import CHATML, bpe_tokenizer
from align.interleaved.policy import (
    AUDIO_PLACEHOLDER,
    DONE,
    Grammar,
    GrammarLogitsProcessor,
    InterleavedPolicy,
    flatten_content,
)
from align.policy import BOUNDARY, SPEECH, TEXT, SpeechCodec, Trajectory, as_audio, load_codec

MARKERS = ("none", "each_run")
PROMPT_FORMATS = ("chat_template", "glm-4-voice")
AUDIO_INPUTS = ("tokens", "none")

# GLM-4-Voice's web_demo.py system prompts (the model was tuned with them) and its turn format.
GLM_SYSTEM_AUDIO = ("User will provide you with a speech instruction. Do it step by step. First, think about the "
                    "instruction and respond in a interleaved manner, with 13 text token followed by 26 audio tokens. ")
GLM_SYSTEM_TEXT = ("User will provide you with a text instruction. Do it step by step. First, think about the "
                   "instruction and respond in a interleaved manner, with 13 text token followed by 26 audio tokens.")

# Documented checkpoints' settings (every one can be overridden by the factory's own arguments).
PRESETS: dict[str, dict[str, Any]] = {
    # THUDM/glm-4-voice-9b: ChatGLM remote code; speech = <|audio_0..16383|> (12.5 Hz, glm-4-voice-tokenizer);
    # answers end with <|user|>; no audio markers in the answer; the prompt starts with [gMASK]<sop>.
    "glm-4-voice": {"pattern": (13, 26), "markers": "none", "eos": "<|user|>", "prompt_format": "glm-4-voice",
                    "add_special_tokens": True, "trust_remote_code": True},
    # VITA-MLLM/VITA-Audio-Boost (Qwen2 + the GLM-4-Voice speech tokens): every speech chunk is
    # <|begin_of_audio|> ... <|end_of_audio|>, the markers counted in the chunk (10 = BOA + 8 + EOA); ChatML.
    "vita-audio": {"pattern": (1, 10, 4, 10), "markers": "each_run", "markers_in_chunk": True, "eos": "<|im_end|>",
                   "trust_remote_code": True},
}


# ---------------------------------------------------------------------------------------------------------------
# the layout
# ---------------------------------------------------------------------------------------------------------------


def parse_pattern(pattern: str | Sequence[int]) -> tuple[int, ...]:
    """Chunk sizes ``text_0 speech_0 text_1 speech_1 ...`` from ``"13 26"``, ``"1,10,4,10"``, ``"13:26"`` or a list."""
    if isinstance(pattern, str):
        parts = [p for p in re.split(r"[\s,:/]+", pattern.strip()) if p]
        try:
            sizes = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"pattern {pattern!r}: expected chunk sizes like '13 26' or '1 10 4 10'") from None
    else:
        sizes = tuple(int(p) for p in pattern)
    if not sizes or len(sizes) % 2 or min(sizes) < 1:
        raise ValueError(f"pattern {pattern!r}: expected pairs of chunk sizes >= 1 (text speech [text speech ...])")
    return sizes


@dataclass
class NativeSpec:
    """Where a native checkpoint keeps its speech tokens and how it interleaves them.

    Attributes:
        speech_offset: id of speech token 0 (speech ids are speech_offset .. speech_offset + speech_vocab_size - 1).
        speech_vocab_size: number of speech tokens.
        eos_id: the end of the answer (the checkpoint's end-of-turn token).
        pattern: chunk sizes ``text_0 speech_0 text_1 speech_1 ...``; the last pair repeats.
        boa_id: begin-of-audio token, None when the tokenizer has none.
        eoa_id: end-of-audio token, None when the tokenizer has none.
        markers: ``none``: runs of speech in the answer are bare (GLM-4-Voice); ``each_run``: every run is
            ``BOA ... EOA`` (VITA-Audio).
        markers_in_chunk: the pattern's speech sizes count the BOA and EOA of the run (VITA-Audio: 10 = 1 + 8 + 1).
    """

    speech_offset: int
    speech_vocab_size: int
    eos_id: int
    pattern: tuple[int, ...] = (13, 26)
    boa_id: int | None = None
    eoa_id: int | None = None
    markers: str = "none"
    markers_in_chunk: bool = False

    def __post_init__(self) -> None:
        self.pattern = parse_pattern(self.pattern)
        if self.markers not in MARKERS:
            raise ValueError(f"markers must be one of {MARKERS}, got {self.markers!r}")
        if self.speech_vocab_size < 1 or self.speech_offset < 0:
            raise ValueError(f"bad speech range: offset {self.speech_offset}, size {self.speech_vocab_size}")
        if self.marked and (self.boa_id is None or self.eoa_id is None):
            raise ValueError("markers 'each_run' needs the tokenizer's begin/end-of-audio tokens (boa, eoa)")
        if self.markers_in_chunk and not self.marked:
            raise ValueError("markers_in_chunk needs markers 'each_run'")
        if self.markers_in_chunk and min(self.pattern[1::2]) < 3:
            raise ValueError(f"pattern {self.pattern}: speech chunks that count BOA and EOA need >= 3 positions")
        ids = {"eos": self.eos_id, "boa": self.boa_id, "eoa": self.eoa_id}
        present = {k: v for k, v in ids.items() if v is not None}
        if len(set(present.values())) != len(present):
            raise ValueError(f"eos/boa/eoa must be different ids, got {present}")
        inside = [k for k, v in present.items() if self.is_speech(v)]
        if inside:
            raise ValueError(f"{', '.join(inside)} fall inside the speech range")

    @property
    def marked(self) -> bool:
        return self.markers == "each_run"

    def text_chunk(self, pair: int) -> int:
        return self.pattern[2 * min(pair, len(self.pattern) // 2 - 1)]

    def speech_chunk(self, pair: int) -> int:
        """Speech tokens in pair ``pair``'s chunk (the run's markers excluded)."""
        size = self.pattern[2 * min(pair, len(self.pattern) // 2 - 1) + 1]
        return size - 2 if self.markers_in_chunk else size

    def is_speech(self, token_id: int) -> bool:
        return self.speech_offset <= token_id < self.speech_offset + self.speech_vocab_size

    def channel(self, token_id: int) -> int:
        """TEXT, SPEECH or BOUNDARY for one id (EOS is text: the token that ends the text channel's turn)."""
        if self.is_speech(token_id):
            return SPEECH
        if token_id is not None and token_id in (self.boa_id, self.eoa_id):
            return BOUNDARY
        return TEXT


def find_speech_tokens(tokenizer: Any, speech_token: str = "<|audio_{}|>",
                       speech_vocab_size: int | None = None) -> tuple[int, int]:
    """(id of speech token 0, number of speech tokens) of a tokenizer that already has them.

    ``speech_token`` is a format with one ``{}`` for the index. Without ``speech_vocab_size`` the count is read from
    the vocabulary (every name matching the format). The ids must be contiguous (offset + index).
    """
    if speech_token.count("{}") != 1:
        raise ValueError(f"speech_token {speech_token!r}: expected a format with one '{{}}', e.g. '<|audio_{{}}|>'")
    vocab = tokenizer.get_vocab()
    if speech_vocab_size is None:
        head, tail = speech_token.split("{}")
        regex = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
        indices = sorted(int(m.group(1)) for name in vocab if (m := regex.fullmatch(name)))
        if not indices:
            raise ValueError(f"the tokenizer has no speech tokens named {speech_token.format('N')!r} (not a speech "
                             "checkpoint? set speech_token to its format)")
        if indices != list(range(len(indices))):
            gap = next(i for i, k in enumerate(indices) if i != k)
            raise ValueError(f"speech tokens {speech_token!r} are not numbered 0..{indices[-1]}: "
                             f"{speech_token.format(gap)} is missing")
        speech_vocab_size = len(indices)
    names = [speech_token.format(i) for i in range(speech_vocab_size)]
    missing = [n for n in names if n not in vocab]
    if missing:
        raise ValueError(f"the tokenizer lacks {len(missing)} of the {speech_vocab_size} speech tokens "
                         f"{speech_token!r} (first: {missing[0]})")
    ids = [vocab[n] for n in names]
    if ids != list(range(ids[0], ids[0] + speech_vocab_size)):
        bad = next(i for i, t in enumerate(ids) if t != ids[0] + i)
        raise ValueError(f"speech tokens {speech_token!r} are not contiguous ids: {names[0]} is {ids[0]} but "
                         f"{names[bad]} is {ids[bad]}")
    return ids[0], speech_vocab_size


def _token_id(tokenizer: Any, name: str | None) -> int | None:
    if not name:
        return None
    return tokenizer.get_vocab().get(name)


# Token classes and grammar phases.
_T, _S, _BOA, _EOA, _EOS, _OTHER = range(6)
# TEXT: in pair p's text chunk; SPEECH: in pair p's speech run (a full-size chunk so far); AFTER_RUN: a full run
# closed by EOA; FINAL_TEXT: the text ran past its chunk (the last pair, the speech is the shorter channel);
# FINAL_TEXT_SPEECH: that last pair's speech (at most m_p); FINAL_SPEECH: the last pair's speech, unbounded.
TEXT_CHUNK, SPEECH_RUN, AFTER_RUN, FINAL_TEXT, FINAL_TEXT_SPEECH, FINAL_SPEECH, EOS_NEXT = range(7)  # and DONE (7)
State = tuple[int, int, int, bool]  # (phase, pair, tokens in the current chunk, any speech yet)


class NativeGrammar(Grammar):
    """The checkpoint's interleave pattern as a state machine over token ids (see the module docstring)."""

    def __init__(self, spec: NativeSpec, text_allowed: torch.Tensor):
        self.spec = spec
        vocab = text_allowed.shape[0]
        kinds = torch.full((vocab,), _OTHER, dtype=torch.long)
        kinds[text_allowed] = _T
        kinds[spec.speech_offset: spec.speech_offset + spec.speech_vocab_size] = _S
        if spec.marked:
            kinds[spec.boa_id], kinds[spec.eoa_id] = _BOA, _EOA
        kinds[spec.eos_id] = _EOS
        self.kinds = kinds
        self.vocab_size = vocab
        self._masks: dict[tuple[frozenset[int], str], torch.Tensor] = {}

    def kind(self, token: int) -> int:
        return int(self.kinds[token]) if 0 <= token < self.vocab_size else _OTHER

    def start(self) -> State:
        return TEXT_CHUNK, 0, 0, False

    def allowed(self, state: State) -> frozenset[int]:
        """The token classes allowed next."""
        phase, pair, count, spoke = state
        spec = self.spec
        opens = _BOA if spec.marked else _S  # what starts a run of speech
        closes = _EOA if spec.marked else _EOS  # what ends the last run (unmarked: the answer's end)
        if phase in (TEXT_CHUNK, FINAL_TEXT):
            return frozenset({_T, opens} | (set() if spoke else {_EOS}))  # EOS: a text-only answer
        if phase == SPEECH_RUN:
            out = {_S}
            if count >= 1:
                out.add(closes)
            if not spec.marked and count == spec.speech_chunk(pair):
                out.add(_T)  # the next pair's text
            return frozenset(out)
        if phase == AFTER_RUN:
            return frozenset({_T, _EOS})
        if phase == FINAL_TEXT_SPEECH:
            return frozenset(({_S} if count < spec.speech_chunk(pair) else set()) | ({closes} if count else set()))
        if phase == FINAL_SPEECH:
            return frozenset({_S} | ({closes} if count else set()))
        return frozenset({_EOS})  # EOS_NEXT; DONE (generate pads finished rows itself)

    def advance(self, state: State, token: int) -> State:
        """The state after ``token``; ValueError when the pattern does not allow it."""
        phase, pair, count, spoke = state
        if phase == DONE:
            return state
        kind = self.kind(token)
        if kind not in self.allowed(state):
            raise ValueError(f"token {token} not allowed in phase {phase} (pair {pair}, count {count})")
        if kind == _EOS:
            return DONE, pair, count, spoke
        spec = self.spec
        first = 0 if spec.marked else 1  # speech tokens a run holds right after the token that opened it
        if phase == TEXT_CHUNK:
            if kind == _T:
                return (TEXT_CHUNK, pair, count + 1, spoke) if count < spec.text_chunk(pair) else (
                    FINAL_TEXT, pair, 0, spoke)
            # speech opens: after a full text chunk a regular run, after a short one the last (the text has ended)
            return (SPEECH_RUN if count == spec.text_chunk(pair) else FINAL_SPEECH), pair, first, True
        if phase == SPEECH_RUN:
            if kind == _S:
                return (SPEECH_RUN if count < spec.speech_chunk(pair) else FINAL_SPEECH), pair, count + 1, True
            if kind == _EOA:
                return (AFTER_RUN if count == spec.speech_chunk(pair) else EOS_NEXT), pair, count, True
            return TEXT_CHUNK, pair + 1, 1, True  # unmarked: text after a full speech chunk
        if phase == AFTER_RUN:
            return TEXT_CHUNK, pair + 1, 1, True
        if phase == FINAL_TEXT:
            return (FINAL_TEXT, pair, 0, spoke) if kind == _T else (FINAL_TEXT_SPEECH, pair, first, True)
        # FINAL_TEXT_SPEECH, FINAL_SPEECH
        return (phase, pair, count + 1, True) if kind == _S else (EOS_NEXT, pair, count, True)

    def mask(self, kinds: frozenset[int], device: torch.device) -> torch.Tensor:
        """Bool mask over the vocabulary of the ids in the token classes ``kinds`` (cached)."""
        key = (kinds, str(device))
        if key not in self._masks:
            self._masks[key] = torch.isin(self.kinds, torch.tensor(sorted(kinds))).to(device)
        return self._masks[key]

class NativeLogitsProcessor(GrammarLogitsProcessor):
    """Masks every token the pattern does not allow at each row's next position (one instance per generate call)."""

    def allowed_mask(self, states: list[State], scores: torch.FloatTensor) -> torch.Tensor:
        return torch.stack([self.grammar.mask(self.grammar.allowed(s), scores.device) for s in states])


# ---------------------------------------------------------------------------------------------------------------
# the policy
# ---------------------------------------------------------------------------------------------------------------


class NativeInterleavedPolicy(InterleavedPolicy):
    """`PolicyAdapter` for a checkpoint whose vocabulary already has speech tokens, in its own interleave pattern.

    Log-probs, sampling and speech decoding are `InterleavedPolicy`'s; the layout, the grammar and the prompt are
    the checkpoint's (`NativeSpec`, `NativeGrammar`).

    Args:
        model: the causal LM (may be wrapped by peft).
        tokenizer: its tokenizer (with a chat template for ``prompt_format="chat_template"``).
        spec: the speech range, markers, end token and pattern (see `native_spec`).
        codec: speech tokens <-> audio; encodes spoken user turns and reference answers when it encodes audio.
        prompt_format: ``chat_template`` (the tokenizer's) or ``glm-4-voice`` (GLM-4-Voice's
            ``<|system|>..<|user|>..<|assistant|>streaming_transcription`` turns).
        system_prompt: the system turn when the messages have none (glm-4-voice format, None: GLM-4-Voice's own,
            audio or text variant; e.g. VITA-Audio's demo: "Your Name: Luke\nYour Gender: male\n\nRespond in a
            text-audio interleaved manner.").
        add_special_tokens: let the tokenizer add its prefix tokens to the prompt (GLM-4-Voice: ``[gMASK]<sop>``).
        audio_input: ``tokens``: spoken user turns enter the prompt as the codec's speech tokens (between BOA and
            EOA when the tokenizer has them); ``none``: the checkpoint hears audio another way (e.g. a continuous
            encoder), so spoken turns reach it as transcripts while the codec still encodes reference answers.
    """

    family = "interleaved"

    def __init__(self, model: Any, tokenizer: Any, spec: NativeSpec, codec: SpeechCodec | None = None, *,
                 prompt_format: str = "chat_template", system_prompt: str | None = None,
                 add_special_tokens: bool = False, audio_input: str = "tokens"):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
        if audio_input not in AUDIO_INPUTS:
            raise ValueError(f"audio_input must be one of {AUDIO_INPUTS}, got {audio_input!r}")
        self.model, self.tokenizer, self.spec, self.codec = model, tokenizer, spec, codec
        self.prompt_format, self.system_prompt = prompt_format, system_prompt
        self.add_special_tokens, self.audio_input = bool(add_special_tokens), audio_input
        vocab = model.get_input_embeddings().weight.shape[0]
        ids = [i for i in (spec.eos_id, spec.boa_id, spec.eoa_id) if i is not None]
        if spec.speech_offset + spec.speech_vocab_size > vocab or max(ids) >= vocab:
            raise ValueError(f"the tokenizer's speech/boundary ids reach beyond the model's {vocab} embeddings "
                             "(tokenizer and model from different checkpoints?)")
        if codec is not None and codec.vocab_size > spec.speech_vocab_size:
            raise ValueError(f"codec has {codec.vocab_size} tokens, the checkpoint only {spec.speech_vocab_size}")
        # Text ids: real tokenizer ids that are neither special, speech nor boundary (padding rows excluded).
        text_allowed = torch.zeros(vocab, dtype=torch.bool)
        text_allowed[: min(len(tokenizer), vocab)] = True
        special = set(tokenizer.all_special_ids) | set(ids)
        added = getattr(tokenizer, "added_tokens_decoder", {})
        special |= {i for i, token in added.items() if getattr(token, "special", False)}
        text_allowed[[i for i in special if 0 <= i < vocab]] = False
        text_allowed[spec.speech_offset: spec.speech_offset + spec.speech_vocab_size] = False
        self.grammar = NativeGrammar(spec, text_allowed)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else spec.eos_id

    @property
    def hears_audio(self) -> bool:
        """Spoken turns go into the prompt as speech tokens (``audio_input="tokens"`` and a codec that encodes)."""
        return self.audio_input == "tokens" and _encodes_audio(self.codec)

    # ----------------------------------------------------------------------------------------------- prompts
    def build_prompt(self, messages: list[dict], audios: list | None = None) -> list[int]:
        """Token ids of ``messages`` + the assistant header, in the checkpoint's prompt format.

        An ``<audio>`` placeholder in a message's text (or a ``{"type": "audio"}`` part) takes the next item of
        ``audios`` (a path, a `rewards.audio.Audio` or a ``(samples, rate)`` pair): the codec's speech tokens of it,
        between ``<|begin_of_audio|>`` and ``<|end_of_audio|>`` when the tokenizer has them.
        """
        messages = [{**m, "content": flatten_content(m.get("content"))} for m in messages]
        audios = list(audios or [])
        if audios and self.audio_input != "tokens":
            raise ValueError("this checkpoint takes spoken turns as transcripts (audio_input: none)")
        rendered = self._render(messages, spoken=bool(audios))
        pieces = rendered.split(AUDIO_PLACEHOLDER)
        if len(pieces) - 1 != len(audios):
            raise ValueError(f"{len(pieces) - 1} {AUDIO_PLACEHOLDER} placeholders in the messages, "
                             f"{len(audios)} audios")
        ids = self.tokenizer(pieces[0], add_special_tokens=self.add_special_tokens)["input_ids"]
        for piece, audio in zip(pieces[1:], audios):
            speech = self._speech_ids(self._encode_audio(audio))
            spec = self.spec
            ids += ([spec.boa_id, *speech, spec.eoa_id] if spec.boa_id is not None and spec.eoa_id is not None
                    else speech)
            ids += self._encode(piece)
        return list(ids)

    def _render(self, messages: list[dict], spoken: bool) -> str:
        if self.prompt_format == "glm-4-voice":
            system = next((m["content"] for m in messages if m.get("role") == "system"), None)
            out = f"<|system|>\n{system or self.system_prompt or (GLM_SYSTEM_AUDIO if spoken else GLM_SYSTEM_TEXT)}"
            for m in messages:
                if m.get("role") == "user":
                    out += f"<|user|>\n{m['content']}"
                elif m.get("role") == "assistant":
                    out += f"<|assistant|>streaming_transcription\n{m['content']}"
            return out + "<|assistant|>streaming_transcription\n"
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template (set tokenizer.chat_template or a prompt_format)")
        if self.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # ----------------------------------------------------------------------------------------------- layout
    def split(self, completion_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(text ids without EOS, speech codec ids) of a completion."""
        spec = self.spec
        text = [t for t in completion_ids if spec.channel(t) == TEXT and t != spec.eos_id]
        speech = [t - spec.speech_offset for t in completion_ids if spec.is_speech(t)]
        return text, speech

    def layout(self, text_ids: Sequence[int], speech_tokens: Sequence[int]) -> list[int]:
        """The completion that carries ``text_ids`` and ``speech_tokens`` (codec ids), ending with EOS.

        Both channels are cut into the pattern's chunks and paired; the last pair takes the rest of both (VITA-Audio's
        ``text_audio_interval``). Exactly what sampling produces for this content.
        """
        spec = self.spec
        bad = [t for t in text_ids if self.grammar.kind(t) != _T]
        if bad:
            raise ValueError(f"ids {bad[:5]} are not text tokens (special, speech or boundary ids)")
        text, speech = list(text_ids), self._speech_ids(speech_tokens)

        def run(ids: list[int]) -> list[int]:
            return [spec.boa_id, *ids, spec.eoa_id] if spec.marked else ids

        if not speech:
            return [*text, spec.eos_id]
        if not text:
            return [*run(speech), spec.eos_id]
        text_chunks, speech_chunks = _chunks(text, spec.text_chunk), _chunks(speech, spec.speech_chunk)
        n = min(len(text_chunks), len(speech_chunks))
        text_chunks = text_chunks[: n - 1] + [sum(text_chunks[n - 1:], [])]
        speech_chunks = speech_chunks[: n - 1] + [sum(speech_chunks[n - 1:], [])]
        out: list[int] = []
        for t, s in zip(text_chunks, speech_chunks):
            out += [*t, *run(s)]
        return [*out, spec.eos_id]

    def sft_target(self, prompt_ids: list[int], text: str, speech_tokens: list[int] | None = None, *,
                   audio: Any = None) -> Trajectory:
        """The reference answer in the checkpoint's pattern.

        Its speech: ``speech_tokens`` if given; else the reference ``audio`` (the seed's ``sft_target_audio``)
        encoded by the codec; else the codec's text front-end, when it has one.
        """
        if speech_tokens is None:
            if self.codec is None:
                raise ValueError("no reference speech tokens and no codec to make them")
            if audio is not None and _encodes_audio(self.codec):
                speech_tokens = self.codec.encode_audio(*as_audio(audio))
            if speech_tokens is None and callable(getattr(self.codec, "encode_text", None)):
                speech_tokens = self.codec.encode_text(text)
            if speech_tokens is None:
                name = self.codec.info().get("name", type(self.codec).__name__)
                raise ValueError(f"codec {name} cannot make speech from text: the row needs its reference speech "
                                 "(sft_target_audio)")
        return self.trajectory(prompt_ids, self.layout(self._encode(text), list(speech_tokens)))

    # ----------------------------------------------------------------------------------------------- sampling
    def _generate_rows(self, rows: list[list[int]], config: GenerationConfig, device: torch.device) -> list[list[int]]:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token sits in the same column
            input_ids[i, width - len(r):] = torch.tensor(r)
            attention[i, width - len(r):] = 1
        out = self.model.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                  generation_config=config,
                                  logits_processor=LogitsProcessorList([NativeLogitsProcessor(self.grammar)]))
        completions = []
        for row in out[:, width:].tolist():
            end = row.index(self.spec.eos_id) + 1 if self.spec.eos_id in row else len(row)
            completions.append(row[:end])
        return completions

    def info(self) -> dict[str, Any]:
        config = getattr(self.model, "config", None)
        return {
            "family": self.family,
            "native": True,
            "model_class": type(self.model).__name__,
            "model": getattr(config, "_name_or_path", None) or getattr(self.model, "name_or_path", None),
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "vocab_size": self.grammar.vocab_size,
            "text_vocab_size": int(self.grammar.kinds.eq(_T).sum()),
            "spec": asdict(self.spec),
            "pattern": " ".join(map(str, self.spec.pattern)),
            "layout": "chunks of both channels paired by the pattern; the last pair holds the rest of both"
                      + ("; every speech run is BOA ... EOA" if self.spec.marked else "; no audio markers"),
            "prompt_format": self.prompt_format,
            "audio_input": self.audio_input,
            "codec": self.codec.info() if self.codec is not None else None,
        }


def _chunks(ids: list[int], size_of) -> list[list[int]]:
    out, pair = [], 0
    while ids:
        size = size_of(pair)
        out.append(ids[:size])
        ids, pair = ids[size:], pair + 1
    return out


def _encodes_audio(codec: Any) -> bool:
    return codec is not None and bool(getattr(codec, "encodes_audio", True))


def native_spec(tokenizer: Any, *, pattern: str | Sequence[int] = (13, 26), speech_token: str = "<|audio_{}|>",
                speech_vocab_size: int | None = None, boa: str | None = "<|begin_of_audio|>",
                eoa: str | None = "<|end_of_audio|>", eos: str | None = None, markers: str = "none",
                markers_in_chunk: bool = False) -> NativeSpec:
    """The `NativeSpec` of a tokenizer that already has its speech tokens (nothing is added to it).

    ``boa``/``eoa`` are used when the tokenizer has them (``markers="each_run"`` requires them); ``eos`` names the
    end-of-turn token (None: the tokenizer's eos token).
    """
    offset, size = find_speech_tokens(tokenizer, speech_token, speech_vocab_size)
    if eos is None:
        eos_id = tokenizer.eos_token_id
        if eos_id is None:
            raise ValueError("the tokenizer has no eos token: name the end-of-turn token (eos=...)")
    else:
        eos_id = _token_id(tokenizer, eos)
        if eos_id is None:
            raise ValueError(f"the tokenizer has no end-of-turn token {eos!r}")
    boa_id, eoa_id = _token_id(tokenizer, boa), _token_id(tokenizer, eoa)
    if markers == "each_run" and (boa_id is None or eoa_id is None):
        raise ValueError(f"markers 'each_run' needs {boa!r} and {eoa!r} in the tokenizer")
    if (boa_id is None) != (eoa_id is None):
        boa_id = eoa_id = None  # one marker without the other cannot bracket audio
    return NativeSpec(speech_offset=offset, speech_vocab_size=size, eos_id=eos_id, pattern=pattern, boa_id=boa_id,
                      eoa_id=eoa_id, markers=markers, markers_in_chunk=markers_in_chunk)


# ---------------------------------------------------------------------------------------------------------------
# the tiny codec
# ---------------------------------------------------------------------------------------------------------------


class FrameCodec:
    """A small real codec: one token per 40 ms frame = (its loudest of ``bands`` mel-spaced bands, its loudness).

    Encoding: per frame, Hann-windowed power spectrum → band energies → token ``band + bands * level``, the level
    being the frame's RMS in ``levels`` steps of ``floor_db / levels`` dB (level 0 = silence, band 0). Decoding:
    each frame a phase-continuous tone at its band's centre frequency, its RMS in the middle of its level, fading
    in and out over 2 ms. So ``encode(decode(t)) == t`` for canonical tokens, and real speech encodes to a coarse pitch/
    loudness contour. ``encode_text`` is a toy text front-end (two loud frames per letter or digit, a silent frame
    per space) so rows without reference audio still get speech; ``text_front_end=False`` removes it, like a neural
    codec (reference speech must then come as audio).
    """

    encodes_audio = True

    def __init__(self, bands: int = 16, levels: int = 4, frame_s: float = 0.04, sample_rate: int = 16000,
                 fmin: float = 100.0, fmax: float = 4000.0, floor_db: float = -50.0, text_front_end: bool = True):
        if bands < 2 or levels < 2 or not 0 < fmin < fmax < sample_rate / 2 or floor_db >= 0:
            raise ValueError(f"bad FrameCodec settings: bands {bands}, levels {levels}, fmin {fmin}, fmax {fmax}, "
                             f"floor_db {floor_db}")
        self.bands, self.levels, self.frame_s, self.sample_rate = int(bands), int(levels), float(frame_s), int(
            sample_rate)
        self.fmin, self.fmax, self.floor_db = float(fmin), float(fmax), float(floor_db)
        self.text_front_end = bool(text_front_end)
        self.vocab_size = self.bands * self.levels
        self.hop = int(round(self.frame_s * self.sample_rate))
        mel = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), bands + 1)
        self.edges = _mel_to_hz(mel)
        self.centres = _mel_to_hz((mel[:-1] + mel[1:]) / 2)
        freqs = np.fft.rfftfreq(self.hop, 1 / self.sample_rate)
        self._band_of_bin = np.searchsorted(self.edges, freqs, side="right") - 1  # -1 / bands: outside
        self._window = np.hanning(self.hop).astype(np.float64)

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> list[int]:
        from rewards.audio import resample, to_mono

        x = to_mono(np.asarray(audio, dtype=np.float32))
        if sample_rate != self.sample_rate:
            x = resample(x, int(sample_rate), self.sample_rate)
        n = len(x) // self.hop
        if n == 0:
            return []
        frames = x[: n * self.hop].astype(np.float64).reshape(n, self.hop)
        power = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
        energies = np.zeros((n, self.bands))
        inside = (self._band_of_bin >= 0) & (self._band_of_bin < self.bands)
        np.add.at(energies.T, self._band_of_bin[inside], power[:, inside].T)
        band = energies.argmax(axis=1)
        db = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        step = -self.floor_db / self.levels
        level = np.clip(np.floor((db - self.floor_db) / step), 0, self.levels - 1).astype(int)
        band[level == 0] = 0
        return [int(b + self.bands * lv) for b, lv in zip(band, level)]

    def encode_text(self, text: str) -> list[int] | None:
        if not self.text_front_end:
            return None
        loud = self.bands * (self.levels - 1)
        out: list[int] = []
        for ch in text.lower():
            if "a" <= ch <= "z":
                out += [loud + (ord(ch) - ord("a")) % self.bands] * 2
            elif ch.isdigit():
                out += [loud + (int(ch) + 3) % self.bands] * 2
            elif ch.isspace():
                out.append(0)
        return out

    def decode(self, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        tokens = [int(t) for t in tokens]
        bad = [t for t in tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"FrameCodec tokens out of range 0..{self.vocab_size - 1}: {bad[:5]}")
        if not tokens:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        step = -self.floor_db / self.levels
        bands, levels = np.array([t % self.bands for t in tokens]), np.array([t // self.bands for t in tokens])
        rms = np.where(levels > 0, 10 ** ((self.floor_db + (levels + 0.5) * step) / 20), 0.0)
        ramp = max(1, int(0.002 * self.sample_rate))
        edge = np.minimum(1.0, np.minimum(np.arange(self.hop) + 1, np.arange(self.hop)[::-1] + 1) / ramp)
        amp = (rms[:, None] * np.sqrt(2) * edge[None, :]).reshape(-1)  # each frame fades in and out: no clicks
        freq = np.repeat(self.centres[bands], self.hop)
        phase = 2 * np.pi * np.cumsum(freq) / self.sample_rate
        return (amp * np.sin(phase)).astype(np.float32), self.sample_rate

    def info(self) -> dict[str, Any]:
        return {"name": "frame", "vocab_size": self.vocab_size, "bands": self.bands, "levels": self.levels,
                "frame_s": self.frame_s, "sample_rate": self.sample_rate, "fmin": self.fmin, "fmax": self.fmax,
                "floor_db": self.floor_db, "text_front_end": self.text_front_end}


def _hz_to_mel(f: Any) -> Any:
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m: Any) -> Any:
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


# ---------------------------------------------------------------------------------------------------------------
# factories
# ---------------------------------------------------------------------------------------------------------------


def build_native_policy(path: str, codec: str | SpeechCodec | None = None, codec_args: dict[str, Any] | None = None,
                        *, preset: str | None = None, pattern: str | Sequence[int] | None = None,
                        speech_token: str = "<|audio_{}|>", speech_vocab_size: int | None = None,
                        boa: str | None = "<|begin_of_audio|>", eoa: str | None = "<|end_of_audio|>",
                        eos: str | None = None, markers: str | None = None, markers_in_chunk: bool | None = None,
                        prompt_format: str | None = None, system_prompt: str | None = None,
                        add_special_tokens: bool | None = None, audio_input: str = "tokens", dtype: str = "auto",
                        device: str = "cpu", trust_remote_code: bool | None = None, revision: str | None = None,
                        local_files_only: bool = False) -> NativeInterleavedPolicy:
    """A native interleaved checkpoint by hub name or local folder, with a codec by import path.

    Args:
        path: hub name (``THUDM/glm-4-voice-9b``) or a local folder (``save_pretrained`` layout).
        codec: ``package.module:Class`` (built with ``codec_args``) or a codec instance: the checkpoint's speech
            tokenizer + vocoder (see the README for GLM-4-Voice's); None: text only, no audio in or out.
        preset: ``glm-4-voice`` or ``vita-audio``: that checkpoint's documented settings (`PRESETS`); the other
            arguments override them.
        pattern: chunk sizes ``"13 26"``, ``"1 10 4 10"`` (default 13 26).
        speech_token: the speech tokens' names, ``{}`` the index; speech_vocab_size: their count (None: all found).
        boa, eoa: begin/end-of-audio token names (used when the tokenizer has them); eos: the end-of-turn token.
        markers: ``none`` or ``each_run`` (every run of speech between BOA and EOA); markers_in_chunk: the
            pattern's speech sizes count them.
        prompt_format, system_prompt, add_special_tokens, audio_input: see `NativeInterleavedPolicy`.
        dtype: ``auto`` (the checkpoint's), ``float32``, ``bfloat16``, ``float16``; device: where the model goes.
        trust_remote_code: run the checkpoint's own modelling code (GLM-4-Voice and VITA-Audio need it).
        local_files_only: never reach the hub (only the local cache).
    """
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from rewards.base import one_line

    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    given = {"pattern": pattern, "markers": markers, "markers_in_chunk": markers_in_chunk, "eos": eos,
             "prompt_format": prompt_format, "add_special_tokens": add_special_tokens,
             "trust_remote_code": trust_remote_code}
    options = {"pattern": (13, 26), "markers": "none", "markers_in_chunk": False, "eos": None,
               "prompt_format": "chat_template", "add_special_tokens": False, "trust_remote_code": False,
               **PRESETS.get(preset or "", {}), **{k: v for k, v in given.items() if v is not None}}
    remote = bool(options["trust_remote_code"])
    local = Path(path).expanduser()
    if (str(path).startswith((".", "/", "~")) or local.exists()) and not local.is_dir():
        raise ValueError(f"checkpoint folder {local} does not exist")
    source = str(local) if local.is_dir() else str(path)
    common = {"trust_remote_code": remote, "revision": revision, "local_files_only": local_files_only}
    try:
        config = AutoConfig.from_pretrained(source, **common)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load checkpoint {path!r}: {one_line(e)} (offline? download it first: "
                         f"hf download {path})") from None
    auto_map = getattr(config, "auto_map", None) or {}
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        loader = AutoModelForCausalLM
    elif "AutoModelForCausalLM" in auto_map or "AutoModel" in auto_map:
        if not remote:
            raise ValueError(f"{path} needs its own modelling code: pass trust_remote_code=true")
        loader = AutoModelForCausalLM if "AutoModelForCausalLM" in auto_map else AutoModel
    else:
        archs = ", ".join(getattr(config, "architectures", None) or []) or "no architectures"
        raise ValueError(f"{path} is a {config.model_type} checkpoint ({archs}), not a causal LM with speech tokens")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the tokenizer of {path!r}: {one_line(e)}") from None
    spec = native_spec(tokenizer, pattern=options["pattern"], speech_token=speech_token,
                       speech_vocab_size=speech_vocab_size, boa=boa, eoa=eoa, eos=options["eos"],
                       markers=options["markers"], markers_in_chunk=options["markers_in_chunk"])
    codec_obj = load_codec(codec, **(codec_args or {})) if codec is not None else None
    try:
        model = loader.from_pretrained(source, dtype=_dtype(dtype), **common)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the weights of {path!r}: {one_line(e)}") from None
    model.to(device)
    return NativeInterleavedPolicy(model, tokenizer, spec, codec_obj, prompt_format=options["prompt_format"],
                                   system_prompt=system_prompt, add_special_tokens=options["add_special_tokens"],
                                   audio_input=audio_input)


def _dtype(name: str) -> Any:
    names = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in names:
        raise ValueError(f"dtype must be one of {', '.join(names)}, got {name!r}")
    return names[name]


_TINY_CORPUS = ["what is two plus two? two plus two is four.", "say hello in a cheerful voice. hello there!",
                "what is the capital of france? the capital of france is paris."]


def tiny_native_tokenizer(corpus: Sequence[str], *, vocab_size: int = 400, speech_vocab: int = 64,
                          extra_special: Sequence[str] = ()) -> Any:
    """An in-memory byte-level BPE (ChatML) that already has ``<|audio_k|>`` and the begin/end-of-audio tokens."""
    tokenizer = bpe_tokenizer(corpus, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size=vocab_size,
                              fallback_corpus=_TINY_CORPUS, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                              bos_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    # as VITA-Audio's tokenizer: the markers as special tokens, then the speech tokens as ordinary added tokens
    tokenizer.add_tokens(["<|begin_of_audio|>", "<|end_of_audio|>", *extra_special], special_tokens=True)
    tokenizer.add_tokens([f"<|audio_{i}|>" for i in range(speech_vocab)], special_tokens=False)
    return tokenizer


def build_tiny_native_policy(corpus: Sequence[str] = (), *, hidden_size: int = 64, layers: int = 2,
                             vocab_size: int = 400, pattern: str | Sequence[int] = (4, 8), markers: str = "none",
                             markers_in_chunk: bool = False, bands: int = 16, levels: int = 4,
                             text_front_end: bool = True, pad_to: int = 64, seed: int = 0) -> NativeInterleavedPolicy:
    """A tiny random LlamaForCausalLM whose tokenizer already has speech tokens, and a `FrameCodec`.

    The embedding matrix is padded to a multiple of ``pad_to`` rows (as real checkpoints are): the padding ids are
    never sampled. The layout is read from the tokenizer exactly as for a real checkpoint (`native_spec`).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    codec = FrameCodec(bands=bands, levels=levels, text_front_end=text_front_end)
    tokenizer = tiny_native_tokenizer(corpus, vocab_size=vocab_size, speech_vocab=codec.vocab_size)
    torch.manual_seed(seed)
    rows = -(-len(tokenizer) // pad_to) * pad_to
    config = LlamaConfig(vocab_size=rows, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    model = LlamaForCausalLM(config)
    spec = native_spec(tokenizer, pattern=pattern, markers=markers, markers_in_chunk=markers_in_chunk)
    return NativeInterleavedPolicy(model, tokenizer, spec, codec)


def save_tiny_native(folder: str | Path, corpus: Sequence[str] = (), **kwargs: Any) -> Path:
    """Save a tiny native checkpoint (model + tokenizer) to ``folder``; load it with
    ``build_native_policy(path=folder, codec="align.interleaved.native:FrameCodec", pattern=...)``."""
    policy = build_tiny_native_policy(corpus, **kwargs)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    return folder


# GLM-4-Voice-9B's shape (THUDM/glm-4-voice-9b config.json: ChatGLM, 40 layers, hidden 4096, ffn 13696, 32 heads,
# 2 KV groups of 128, QKV bias, half-rotary RoPE, padded vocab 168960 = GLM-4's 151552 + 16384 speech tokens + pad)
# in transformers' native GlmForCausalLM, the same architecture as GLM-4-9B-chat-hf.
GLM4_VOICE_SHAPE: dict[str, Any] = {"vocab_size": 168960, "hidden_size": 4096, "intermediate_size": 13696,
                                    "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 2,
                                    "head_dim": 128, "attention_bias": True, "max_position_embeddings": 8192}
REDUCED_SHAPE: dict[str, Any] = {**GLM4_VOICE_SHAPE, "hidden_size": 1024, "intermediate_size": 3424,
                                 "num_hidden_layers": 4, "num_attention_heads": 8}


def build_random_native_policy(shape: str = "real", dtype: str = "bfloat16", device: str = "cpu", *,
                               pattern: str | Sequence[int] = (13, 26), seed: int = 0) -> NativeInterleavedPolicy:
    """Random weights at GLM-4-Voice-9B's shape (``real``, 9.4 B parameters) or a 4-layer one (``reduced``), for
    performance benchmarks: a GlmForCausalLM, an in-memory tokenizer with GLM-4-Voice's 16384 ``<|audio_k|>``
    tokens, ``<|user|>`` ending the turn, and a `FrameCodec` (its 64 tokens: the first 64 speech ids decode)."""
    from transformers import GlmConfig, GlmForCausalLM

    shapes = {"real": GLM4_VOICE_SHAPE, "reduced": REDUCED_SHAPE}
    if shape not in shapes:
        raise ValueError(f"shape must be 'real' or 'reduced', got {shape!r}")
    tokenizer = tiny_native_tokenizer(_TINY_CORPUS, speech_vocab=16384, extra_special=["<|user|>", "<|assistant|>"])
    torch_dtype = _dtype(dtype)
    torch_dtype = torch.bfloat16 if torch_dtype == "auto" else torch_dtype
    config = GlmConfig(**shapes[shape], pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                       bos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    try:
        with torch.device(device):
            model = GlmForCausalLM(config)
    finally:
        torch.set_default_dtype(before)
    spec = native_spec(tokenizer, pattern=pattern, eos="<|user|>")
    return NativeInterleavedPolicy(model, tokenizer, spec, FrameCodec())


# ---------------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------------


class NativeEvalAdapter(_EvalPolicyAdapter):
    """``wavalign eval --model interleaved --model-arg path=DIR --model-arg codec=pkg.mod:Class``: a native
    checkpoint (optionally with an align run's ``checkpoint=.../trainer.pt``) answering in both channels."""

    def __init__(self, path: str, codec: str | None = None, checkpoint: str | None = None, *,
                 name: str | None = None, **kwargs: Any):
        if name is None:
            base = Path(str(path).rstrip("/")).name or str(path)
            name = base if not checkpoint else f"{base}-{_run_name(checkpoint)}"
        super().__init__(policy="interleaved", checkpoint=checkpoint, name=name, path=path, codec=codec, **kwargs)


def _run_name(checkpoint: str) -> str:
    p = Path(checkpoint)
    return p.parent.parent.name if p.parent.name == "checkpoint" else p.stem


__all__ = ["FrameCodec", "NativeEvalAdapter", "NativeGrammar", "NativeInterleavedPolicy", "NativeLogitsProcessor",
           "NativeSpec", "PRESETS", "build_native_policy", "build_random_native_policy", "build_tiny_native_policy",
           "find_speech_tokens", "native_spec", "parse_pattern", "save_tiny_native"]
