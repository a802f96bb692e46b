"""The interleaved single-stream family: one causal LM emits text and speech tokens in one sequence.

GLM-4-Voice, VITA-Audio and Step-Audio 2 put speech tokens into the LM's vocabulary and alternate chunks of text
and speech (GLM-4-Voice: 13 text tokens, then 26 speech tokens). The channel of a position is read from its token
id; the alternation is enforced while sampling by `InterleaveLogitsProcessor`. `InterleavedPolicy` wraps any
Hugging Face causal LM this way; `extend_vocab` adds the speech and boundary tokens to a text-only LM.

The grammar of a completion (k = text_chunk, m = speech_chunk; T a text token, S a speech token; TEND ends the
text channel, BOA/EOA begin/end audio, EOS ends the answer):

    completion := body EOS
    body       := T^k BOA S^m body            both channels open: full chunks alternate
                | T^j TEND BOA S^* EOA         text ends first (0 <= j < k): the speech finishes alone
                | T^k BOA S^j EOA T^* TEND     speech ends first (0 <= j < m): the text finishes alone

So every finished completion has exactly one TEND, one EOA and one final EOS; every run of speech starts with BOA.
Given the text ids and speech ids the layout is unique (`InterleavedPolicy.layout`), which is how SFT targets are
built, and every sequence the sampler can produce is the layout of its own channels.

Channels: speech-range ids -> SPEECH; BOA/EOA -> BOUNDARY; everything else (text, TEND, EOS) -> TEXT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList

from align.building import sampling
from align.policy import BOUNDARY, PAD_CHANNEL, SPEECH, TEXT, SpeechCodec, Trajectory, as_audio

AUDIO_PLACEHOLDER = "<audio>"  # where an audio turn goes in a message's text (the seed's messages/audios schema)


@dataclass
class InterleaveSpec:
    """Where the speech tokens live in the vocabulary and how the channels alternate.

    Attributes:
        speech_offset: id of speech token 0 (speech ids are speech_offset .. speech_offset + speech_vocab_size - 1).
        speech_vocab_size: number of speech tokens (the codec's vocabulary).
        boa_id: begin-of-audio token (starts every run of speech).
        eoa_id: end-of-audio token (ends the speech channel).
        text_end_id: ends the text channel.
        eos_id: ends the answer (the chat template's end-of-turn token).
        text_chunk: text tokens per chunk while both channels are open (GLM-4-Voice: 13).
        speech_chunk: speech tokens per chunk while both channels are open (GLM-4-Voice: 26).
    """

    speech_offset: int
    speech_vocab_size: int
    boa_id: int
    eoa_id: int
    text_end_id: int
    eos_id: int
    text_chunk: int = 13
    speech_chunk: int = 26

    def __post_init__(self) -> None:
        if self.text_chunk < 1 or self.speech_chunk < 1:
            raise ValueError(f"chunks must be >= 1, got text_chunk={self.text_chunk} speech_chunk={self.speech_chunk}")
        if self.speech_vocab_size < 1 or self.speech_offset < 0:
            raise ValueError(f"bad speech range: offset {self.speech_offset}, size {self.speech_vocab_size}")
        markers = {"boa_id": self.boa_id, "eoa_id": self.eoa_id, "text_end_id": self.text_end_id, "eos_id": self.eos_id}
        if len(set(markers.values())) != len(markers):
            raise ValueError(f"boa/eoa/text_end/eos must be four different ids, got {markers}")
        inside = [name for name, i in markers.items() if self.is_speech(i)]
        if inside:
            raise ValueError(f"{', '.join(inside)} fall inside the speech range")

    def is_speech(self, token_id: int) -> bool:
        return self.speech_offset <= token_id < self.speech_offset + self.speech_vocab_size

    def channel(self, token_id: int) -> int:
        """TEXT, SPEECH or BOUNDARY for one id."""
        if self.is_speech(token_id):
            return SPEECH
        if token_id in (self.boa_id, self.eoa_id):
            return BOUNDARY
        return TEXT


def extend_vocab(
    model: Any,
    tokenizer: Any,
    speech_vocab_size: int,
    *,
    text_chunk: int = 13,
    speech_chunk: int = 26,
    speech_token: str = "<|speech_{}|>",
    boa: str = "<|begin_of_audio|>",
    eoa: str = "<|end_of_audio|>",
    text_end: str = "<|text_end|>",
) -> InterleaveSpec:
    """Add speech tokens and the boundary tokens to a text LM and its tokenizer; return the layout.

    New embedding rows (input and, when untied, output) start at the mean of the existing token rows: the new tokens
    then start with an average logit instead of a random one, so the text distribution is barely moved (Hewitt,
    "Initializing new word embeddings for pretrained language models", 2021). Existing rows are untouched.
    Idempotent: on a model/tokenizer that already has the tokens it only returns the spec.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token: set one (the end-of-turn token of its chat template)")
    n_before = len(tokenizer)
    speech = [speech_token.format(i) for i in range(speech_vocab_size)]
    tokenizer.add_tokens(speech, special_tokens=False)
    tokenizer.add_tokens([boa, eoa, text_end], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(speech)
    if ids != list(range(ids[0], ids[0] + speech_vocab_size)):
        raise ValueError(f"speech tokens {speech_token!r} are not contiguous ids in this tokenizer")

    n_rows = model.get_input_embeddings().weight.shape[0]
    n_new = len(tokenizer)
    if n_new > n_rows:
        model.resize_token_embeddings(n_new, mean_resizing=False)
    # Rows to initialise: the tokens added now, and rows the resize created (tokens already in the tokenizer);
    # a model's padding rows beyond the tokenizer stay as they were.
    first_new = min(n_before, n_rows)
    if n_new > first_new:
        layers = [model.get_input_embeddings(), model.get_output_embeddings()]
        weights = {id(layer.weight): layer for layer in layers if layer is not None}  # tied: one weight
        with torch.no_grad():
            for layer in weights.values():
                layer.weight[first_new:n_new] = layer.weight[:first_new].mean(0, keepdim=True)
                bias = getattr(layer, "bias", None)
                if bias is not None and bias.shape[0] == layer.weight.shape[0]:
                    bias[first_new:n_new] = bias[:first_new].mean()
    boa_id, eoa_id, text_end_id = tokenizer.convert_tokens_to_ids([boa, eoa, text_end])
    return InterleaveSpec(
        speech_offset=ids[0],
        speech_vocab_size=speech_vocab_size,
        boa_id=boa_id,
        eoa_id=eoa_id,
        text_end_id=text_end_id,
        eos_id=tokenizer.eos_token_id,
        text_chunk=text_chunk,
        speech_chunk=speech_chunk,
    )


# Grammar states: (phase, tokens already in the current chunk).
TEXT_CHUNK, BOA_NEXT, SPEECH_CHUNK, TEXT_ONLY, BOA_LAST, SPEECH_ONLY, EOS_NEXT, DONE = range(8)
# Token classes.
_T, _S, _BOA, _EOA, _TEND, _EOS, _OTHER = range(7)
_ALLOWED = {
    TEXT_CHUNK: (_T, _TEND),
    BOA_NEXT: (_BOA,),
    SPEECH_CHUNK: (_S, _EOA),
    TEXT_ONLY: (_T, _TEND),
    BOA_LAST: (_BOA,),
    SPEECH_ONLY: (_S, _EOA),
    EOS_NEXT: (_EOS,),
    DONE: (_EOS,),  # generate pads finished rows itself; EOS keeps the row's distribution well defined
}


class Grammar:
    """A completion grammar as a state machine over token ids: a subclass gives ``start()`` and ``advance(state,
    token)`` (ValueError for a token it does not allow); ``state[0]`` is the phase, `DONE` once EOS is read."""

    def start(self) -> tuple:
        raise NotImplementedError

    def advance(self, state: tuple, token: int) -> tuple:
        raise NotImplementedError

    def check(self, completion_ids: Sequence[int], finished: bool | None = None) -> None:
        """Raise ValueError unless ``completion_ids`` is a prefix of the grammar (a full sentence if ``finished``)."""
        state = self.start()
        for i, token in enumerate(completion_ids):
            if state[0] == DONE:
                raise ValueError(f"tokens after EOS at position {i}")
            try:
                state = self.advance(state, int(token))
            except ValueError as e:
                raise ValueError(f"position {i}: {e}") from None
        if finished is not None and (state[0] == DONE) != finished:
            raise ValueError(f"expected finished={finished}, the sequence ends in phase {state[0]}")


class GrammarLogitsProcessor(LogitsProcessor):
    """Follows each row of a generate call through a `Grammar` (one instance per call); a subclass masks the
    scores with `allowed_mask`."""

    def __init__(self, grammar: Grammar):
        self.grammar = grammar
        self.states: list[tuple] | None = None
        self.seen = 0  # sequence length already consumed

    def follow(self, input_ids: torch.LongTensor) -> list[tuple]:
        """Every row's state after the tokens generated since the last call."""
        if self.states is None:  # first call: input_ids is the (left-padded) prompt
            self.states = [self.grammar.start()] * input_ids.shape[0]
            self.seen = input_ids.shape[1]
        for row, tokens in enumerate(input_ids[:, self.seen :].tolist()):
            for token in tokens:
                self.states[row] = self.grammar.advance(self.states[row], token)
        self.seen = input_ids.shape[1]
        return self.states

    def allowed_mask(self, states: list[tuple], scores: torch.FloatTensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        allowed = self.allowed_mask(self.follow(input_ids), scores)
        if scores.shape[-1] != allowed.shape[-1]:
            raise ValueError(f"logits over {scores.shape[-1]} ids, grammar built for {allowed.shape[-1]}")
        return scores.masked_fill(~allowed, float("-inf"))


class InterleaveGrammar(Grammar):
    """The completion grammar as a state machine over token ids (see the module docstring)."""

    def __init__(self, spec: InterleaveSpec, text_allowed: torch.Tensor):
        self.spec = spec
        vocab = text_allowed.shape[0]
        kinds = torch.full((vocab,), _OTHER, dtype=torch.long)
        kinds[text_allowed] = _T
        kinds[spec.speech_offset : spec.speech_offset + spec.speech_vocab_size] = _S
        for token, kind in ((spec.boa_id, _BOA), (spec.eoa_id, _EOA), (spec.text_end_id, _TEND), (spec.eos_id, _EOS)):
            kinds[token] = kind
        self.kinds = kinds
        self.vocab_size = vocab
        # allowed[phase] = bool mask over the vocabulary
        self.allowed = torch.stack([torch.isin(kinds, torch.tensor(_ALLOWED[p])) for p in range(len(_ALLOWED))])

    def kind(self, token: int) -> int:
        return int(self.kinds[token]) if 0 <= token < self.vocab_size else _OTHER

    def start(self) -> tuple[int, int]:
        return TEXT_CHUNK, 0

    def advance(self, state: tuple[int, int], token: int) -> tuple[int, int]:
        """The state after ``token``; ValueError when the grammar does not allow it."""
        phase, count = state
        kind = self.kind(token)
        if phase == DONE:
            return state
        if kind not in _ALLOWED[phase]:
            raise ValueError(f"token {token} not allowed in phase {phase} (count {count})")
        if phase == TEXT_CHUNK:
            if kind == _TEND:
                return BOA_LAST, 0
            return (BOA_NEXT, 0) if count + 1 == self.spec.text_chunk else (TEXT_CHUNK, count + 1)
        if phase == SPEECH_CHUNK:
            if kind == _EOA:
                return TEXT_ONLY, 0
            return (TEXT_CHUNK, 0) if count + 1 == self.spec.speech_chunk else (SPEECH_CHUNK, count + 1)
        if phase == BOA_NEXT:
            return SPEECH_CHUNK, 0
        if phase == BOA_LAST:
            return SPEECH_ONLY, 0
        if phase in (TEXT_ONLY, SPEECH_ONLY):
            return (EOS_NEXT, 0) if kind in (_TEND, _EOA) else state
        return DONE, 0  # EOS_NEXT + EOS

class InterleaveLogitsProcessor(GrammarLogitsProcessor):
    """Masks every token the grammar does not allow at each row's next position (one instance per generate call)."""

    def __init__(self, grammar: InterleaveGrammar):
        super().__init__(grammar)
        self.allowed: torch.Tensor | None = None  # the grammar's masks on the logits' device

    def allowed_mask(self, states: list[tuple], scores: torch.FloatTensor) -> torch.Tensor:
        if self.allowed is None or self.allowed.device != scores.device:
            self.allowed = self.grammar.allowed.to(scores.device)
        return self.allowed[torch.tensor([phase for phase, _ in states], device=scores.device)]


class InterleavedPolicy:
    """`PolicyAdapter` for an interleaved single-stream model: any Hugging Face causal LM + an `InterleaveSpec`.

    Args:
        model: a causal LM whose vocabulary holds the speech and boundary tokens (see `extend_vocab`); may be wrapped
            by peft.
        tokenizer: its tokenizer, with a chat template.
        spec: the speech range, boundary ids and interleave ratio.
        codec: turns speech tokens into audio (and text/audio into speech tokens); optional until needed.
    """

    family = "interleaved"

    @property
    def hears_audio(self) -> bool:
        """Spoken turns go into the prompt as speech tokens when the codec tokenizes audio."""
        return self.codec is not None and bool(getattr(self.codec, "encodes_audio", True))

    def __init__(self, model: Any, tokenizer: Any, spec: InterleaveSpec, codec: SpeechCodec | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.codec = codec
        vocab = model.get_input_embeddings().weight.shape[0]
        end = spec.speech_offset + spec.speech_vocab_size
        if end > vocab or max(spec.boa_id, spec.eoa_id, spec.text_end_id, spec.eos_id) >= vocab:
            raise ValueError(f"the spec's ids reach beyond the model's {vocab} embeddings: run extend_vocab first")
        if codec is not None and codec.vocab_size > spec.speech_vocab_size:
            raise ValueError(f"codec has {codec.vocab_size} tokens, the model only {spec.speech_vocab_size}")
        # Text ids: real tokenizer ids that are neither special, speech nor boundary (padding rows excluded).
        text_allowed = torch.zeros(vocab, dtype=torch.bool)
        text_allowed[: min(len(tokenizer), vocab)] = True
        special = set(tokenizer.all_special_ids)
        added = getattr(tokenizer, "added_tokens_decoder", {})
        special |= {i for i, token in added.items() if getattr(token, "special", False)}
        special |= {spec.boa_id, spec.eoa_id, spec.text_end_id, spec.eos_id}
        text_allowed[[i for i in special if 0 <= i < vocab]] = False
        text_allowed[spec.speech_offset : end] = False
        self.grammar = InterleaveGrammar(spec, text_allowed)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else spec.eos_id

    # ----------------------------------------------------------------------------------------------- prompts
    def build_prompt(self, messages: list[dict], audios: list | None = None) -> list[int]:
        """Token ids of ``messages`` + the assistant header (the tokenizer's chat template).

        Audio turns: a ``<audio>`` placeholder in a message's text (or a ``{"type": "audio"}`` part of a list
        content) takes the next item of ``audios`` (a path, a `rewards.audio.Audio` or a ``(samples, rate)`` pair);
        the codec encodes it to speech tokens, placed as ``BOA speech... EOA``. A codec that cannot encode audio
        is an error: feed a transcript instead (e.g. the ASR front-end).
        """
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template (set tokenizer.chat_template)")
        messages = [{**m, "content": flatten_content(m.get("content"))} for m in messages]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pieces = rendered.split(AUDIO_PLACEHOLDER)
        audios = list(audios or [])
        if len(pieces) - 1 != len(audios):
            found = len(pieces) - 1
            raise ValueError(f"{found} {AUDIO_PLACEHOLDER} placeholders in the messages, {len(audios)} audios")
        ids = self._encode(pieces[0])
        for piece, audio in zip(pieces[1:], audios):
            ids += [self.spec.boa_id, *self._speech_ids(self._encode_audio(audio)), self.spec.eoa_id]
            ids += self._encode(piece)
        return ids

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _encode_audio(self, audio: Any) -> list[int]:
        if self.codec is None:
            raise ValueError("an audio turn needs a codec that encodes audio; this policy has no codec")
        samples, rate = as_audio(audio)
        tokens = self.codec.encode_audio(samples, rate)
        if tokens is None:
            name = self.codec.info().get("name", type(self.codec).__name__)
            raise ValueError(f"codec {name} cannot encode audio: pass the question as text (e.g. an ASR transcript)")
        return list(tokens)

    def _speech_ids(self, speech_tokens: Sequence[int]) -> list[int]:
        bad = [s for s in speech_tokens if not 0 <= s < self.spec.speech_vocab_size]
        if bad:
            raise ValueError(f"speech tokens out of range 0..{self.spec.speech_vocab_size - 1}: {bad[:5]}")
        return [self.spec.speech_offset + int(s) for s in speech_tokens]

    # ----------------------------------------------------------------------------------------------- layout
    def layout(self, text_ids: Sequence[int], speech_tokens: Sequence[int]) -> list[int]:
        """The completion that carries ``text_ids`` and ``speech_tokens`` (codec ids), ending with EOS.

        The unique sentence of the grammar with these channels: exactly what sampling produces for this content.
        """
        spec = self.spec
        bad = [t for t in text_ids if self.grammar.kind(t) != _T]
        if bad:
            raise ValueError(f"ids {bad[:5]} are not text tokens (special, speech or boundary ids)")
        text, speech = list(text_ids), self._speech_ids(speech_tokens)
        k, m = spec.text_chunk, spec.speech_chunk
        out: list[int] = []
        while True:
            if len(text) < k:  # the text ends in this chunk; the speech finishes alone
                out += [*text, spec.text_end_id, spec.boa_id, *speech, spec.eoa_id]
                break
            out += [*text[:k], spec.boa_id]
            text = text[k:]
            if len(speech) < m:  # the speech ends in this chunk; the text finishes alone
                out += [*speech, spec.eoa_id, *text, spec.text_end_id]
                break
            out += speech[:m]
            speech = speech[m:]
        return [*out, spec.eos_id]

    def sft_target(self, prompt_ids: list[int], text: str, speech_tokens: list[int] | None = None, *,
                   audio: Any = None) -> Trajectory:
        """The reference answer in the interleave pattern.

        Its speech: ``speech_tokens`` if given; else the reference ``audio`` encoded by the codec, when the codec
        tokenizes audio; else ``codec.encode_text(text)`` (the codec's TTS front-end).
        """
        if speech_tokens is None:
            if self.codec is None:
                raise ValueError("no reference speech tokens and no codec to make them from the text")
            if audio is not None and self.hears_audio:
                speech_tokens = self.codec.encode_audio(*as_audio(audio))
            if speech_tokens is None:
                speech_tokens = self.codec.encode_text(text)
            if speech_tokens is None:
                name = self.codec.info().get("name", type(self.codec).__name__)
                raise ValueError(f"codec {name} has no text front-end: the row needs its reference speech "
                                 "(sft_target_audio)")
        return self.trajectory(prompt_ids, self.layout(self._encode(text), list(speech_tokens)))

    def trajectory(self, prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> Trajectory:
        """Split a completion into its channels (finished = ends with EOS)."""
        completion = [int(t) for t in completion_ids]
        text_ids, speech_tokens = self.split(completion)
        return Trajectory(
            prompt_ids=list(prompt_ids),
            completion_ids=completion,
            channels=[self.spec.channel(t) for t in completion],
            text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
            speech_tokens=speech_tokens,
            finished=bool(completion) and completion[-1] == self.spec.eos_id,
        )

    def split(self, completion_ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """(text ids without TEND/EOS, speech codec ids) of a completion."""
        spec = self.spec
        text = [t for t in completion_ids if spec.channel(t) == TEXT and t not in (spec.text_end_id, spec.eos_id)]
        speech = [t - spec.speech_offset for t in completion_ids if spec.is_speech(t)]
        return text, speech

    # ----------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(
        self,
        prompts: list[list[int]],
        n: int,
        *,
        temperature: float = 0.7,
        top_p: float = 0.9,
        max_new_tokens: int = 256,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> list[list[Trajectory]]:
        """``n`` rollouts per prompt (grouped per prompt), sampled under the interleave grammar.

        Temperature 0 means greedy. With ``seed`` the draw is reproducible and the global RNG is left as it was.
        ``batch_size`` caps the rows per `model.generate` call (default: all prompts x n at once).
        """
        rows = [list(p) for p in prompts for _ in range(n)]
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else 1.0,
            top_p=top_p if temperature > 0 else 1.0,
            # Neutralise anything a checkpoint's generation_config.json would add (generate fills unset fields
            # from it): sampling must be exactly temperature + top-p under the grammar.
            top_k=0,
            min_p=0.0,
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            min_new_tokens=0,
            num_beams=1,
            eos_token_id=self.spec.eos_id,
            pad_token_id=self.pad_id,
            use_cache=True,
        )
        device = _device(self.model)
        completions: list[list[int]] = []
        with sampling(self.model, seed):
            step = batch_size or len(rows) or 1
            for start in range(0, len(rows), step):
                completions += self._generate_rows(rows[start : start + step], config, device)
        trajs = [self.trajectory(p, c) for p, c in zip(rows, completions)]
        return [trajs[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _generate_rows(self, rows: list[list[int]], config: GenerationConfig, device: torch.device) -> list[list[int]]:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token sits in the same column
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attention[i, width - len(r) :] = 1
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([InterleaveLogitsProcessor(self.grammar)]),
        )
        completions = []
        for row in out[:, width:].tolist():
            end = row.index(self.spec.eos_id) + 1 if self.spec.eos_id in row else len(row)
            completions.append(row[:end])
        return completions

    # ----------------------------------------------------------------------------------------------- training
    def logprobs(
        self, trajs: Sequence[Trajectory], *, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs of the completion tokens under the raw model (no grammar mask).

        ``temperature`` divides the logits first (TRL's GRPO scores rollouts at the sampling temperature; 1.0 =
        the model's own distribution, what SFT and KL use).

        One forward pass over ``prompt + completion`` rows, right-padded (positions 0.. of every row are real, so
        no position ids or fully masked rows to worry about); logits only for the positions that predict
        completion tokens. Returns ``logp`` [B, T] float32 (0 at padding), ``mask`` [B, T] bool and ``channels``
        [B, T] long (PAD_CHANNEL at padding), T = the longest completion.
        """
        device = _device(self.model)
        prompt_lens = [len(t.prompt_ids) for t in trajs]
        comp_lens = [len(t.completion_ids) for t in trajs]
        if min(prompt_lens) < 1:
            raise ValueError("every trajectory needs a non-empty prompt (it predicts the first completion token)")
        width, longest = max(p + c for p, c in zip(prompt_lens, comp_lens)), max(comp_lens)
        batch = len(trajs)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        targets = torch.zeros((batch, longest), dtype=torch.long)
        mask = torch.zeros((batch, longest), dtype=torch.bool)
        channels = torch.full((batch, longest), PAD_CHANNEL, dtype=torch.long)
        for i, t in enumerate(trajs):
            ids = t.prompt_ids + t.completion_ids
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            targets[i, : comp_lens[i]] = torch.tensor(t.completion_ids, dtype=torch.long)
            mask[i, : comp_lens[i]] = True
            channels[i, : comp_lens[i]] = torch.tensor(t.channels, dtype=torch.long)
        keep = width - min(prompt_lens) + 1  # logits from the position before the earliest completion token
        kwargs = {"logits_to_keep": keep} if _supports_logits_to_keep(self.model) else {}
        logits = self.model(input_ids=input_ids.to(device), attention_mask=attention.to(device), **kwargs).logits
        logits = logits[:, -keep:]
        # row i, completion token j is predicted at absolute position p_i + j - 1 -> column p_i + j - 1 - (width - keep)
        cols = torch.tensor(prompt_lens)[:, None] - 1 - (width - keep) + torch.arange(longest)[None, :]
        cols = cols.clamp(max=keep - 1).to(device)
        targets, mask = targets.to(device), mask.to(device)
        rows = []
        for i in range(batch):  # one row at a time: the float32 [T, V] copy of a whole batch can be large
            row = logits[i, cols[i]].float() / temperature
            rows.append(row.gather(-1, targets[i, :, None]).squeeze(-1) - row.logsumexp(-1))
        logp = torch.stack(rows).masked_fill(~mask, 0.0)
        return logp, mask, channels.to(device)

    # ----------------------------------------------------------------------------------------------- speech, info
    def decode_speech(self, speech_tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        if self.codec is None:
            raise ValueError("this policy has no codec to turn speech tokens into audio")
        audio, rate = self.codec.decode(list(speech_tokens))
        return np.asarray(audio, dtype=np.float32), int(rate)

    def info(self) -> dict[str, Any]:
        config = getattr(self.model, "config", None)
        return {
            "family": self.family,
            "model_class": type(self.model).__name__,
            "model": getattr(config, "_name_or_path", None) or getattr(self.model, "name_or_path", None),
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "vocab_size": self.grammar.vocab_size,
            "text_vocab_size": int(self.grammar.kinds.eq(_T).sum()),
            "spec": asdict(self.spec),
            "grammar": "(T^k BOA S^m)* then T^j TEND BOA S* EOA | S^j EOA T* TEND; then EOS",
            "codec": self.codec.info() if self.codec is not None else None,
        }


def flatten_content(content: Any) -> str:
    """Message content as a string: list contents (HF multimodal parts) become text with audio placeholders."""
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(part.get("text", ""))
        elif kind == "audio":
            parts.append(AUDIO_PLACEHOLDER)
        else:
            raise ValueError(f"unsupported message part {part!r}: use text or audio parts")
    return "".join(parts)


def _supports_logits_to_keep(model: Any) -> bool:
    check = getattr(model, "_supports_logits_to_keep", None)
    try:
        return bool(check()) if callable(check) else False
    except Exception:  # a wrapper that forwards the attribute but not the call
        return False


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device
