"""The parallel-stream family (Moshi; Kimi-Audio style): a text stream and K audio codebooks, aligned per frame.

Built on transformers' native `MoshiForConditionalGeneration` (a temporal transformer over frames plus a depth
transformer over the codebooks of one frame) and its `MimiModel` codec (24 kHz, 1920 samples = one 12.5 Hz
frame). ``moshi`` loads the public checkpoint (``kmhf/hf-moshiko``) or a local folder; ``tiny-moshi`` is a random
tiny model of the same classes for smoke runs on a CPU.

**Streams.** Every frame f carries a text token ``text[f]``, Moshi's K codes ``moshi[k][f]`` and the user's K codes
``user[k][f]``. Codebooks k >= 1 are delayed by one frame (the acoustic delay; transformers'
``build_delay_pattern_mask``): the model's position t holds ``text[t]``, ``moshi[0][t]`` and ``moshi[k][t-1]``
(k >= 1; BOS at t = 0), the same for the user. Position t of the temporal transformer gives the hidden state h_t;
its text head predicts ``text[t+1]``; the depth transformer, fed h_t and ``[text[t+1], d_0, ..., d_{K-2}]`` (the
delayed codes of position t+1), predicts ``d_0 .. d_{K-1}`` of position t+1, one codebook after the other. That is
exactly how ``MoshiForConditionalGeneration.generate`` samples; `MoshiPolicy.generate` runs the same computation
frame by frame (its own loop, to apply temperature / top-p per stream and to know every sampled token's log-prob)
and `MoshiPolicy.logprobs` recomputes it teacher-forced in one pass of each transformer.

**Prompt** (`MoshiPrompt`, undelayed frames): frame 0 holds the initial tokens (text id ``vocab_size``, audio id
``audio_vocab_size``: the model's unconditional input); then each turn in order. A user turn puts its speech on the
user stream (Mimi codes of the audio at 24 kHz; a text user turn is first spoken by the packaged Piper voice,
resampled 22.05 -> 24 kHz) while Moshi's stream holds silence (the Mimi codes of one silent frame, as transformers'
generate uses for its blank user input) and Moshi's text holds padding. An assistant turn (multi-turn history) is
laid out like an SFT target below, on Moshi's streams, with the user silent. System prompts are refused: Moshi has
none.

**Completion** of N positions (``max_new_tokens`` = N frames at most): the text tokens of frames P .. P+N-1 and the
K codes of the N-1 frames P .. P+N-2 (P = the prompt's frames). At the first completion position the delayed
acoustic codes belong to the prompt's last frame (given, not sampled); at the last one, codebook 0 is closed with
the delay pattern's pad id (``audio_vocab_size``, as transformers' pattern mask ends codebook 0) so that the acoustic
codes of the last spoken frame are still sampled. Every completion token is sampled by the model and has a log-prob;
the decoded speech is the N-1 complete frames. Flat order (`align.policy.flat_stream`): ``text`` (N, channel TEXT),
then ``audio_0`` .. ``audio_{K-1}`` (N-1 each, channel SPEECH).

**What ends an answer.** Moshi is full duplex and never stops on its own. An answer here ends (``finished``) when
the text stream emits ``end_id`` (the tokenizer's EOS when it has one; the public tokenizer has none) or when it
has emitted ``end_pad_frames`` text paddings in a row after at least one word (default 25 = 2 s of silence in its
inner monologue); otherwise it is cut at ``max_new_tokens`` frames (not finished).

**SFT targets** (`MoshiPolicy.sft_target`): the reference speech as Mimi codes (the row's reference audio; without
one, the reference text spoken by the packaged Piper voice; ``info()`` counts which), the reference text's words
placed on the frames in proportion to their character offsets (a word's tokens on consecutive frames from its start,
``text_epad_id`` on the frame before a word when free, ``text_pad_id`` elsewhere: Moshi's inner-monologue layout
without word timestamps), then the closing frame: ``end_id``, or text paddings up to ``end_pad_frames`` when there
is no end token. That is the layout the sampler produces for such content.

**SFT weights** (``Trajectory.weights``, per position, kyutai's moshi-finetune recipe): text positions weigh
``text_weight`` (1), text paddings ``text_pad_weight`` (0.5, moshi-finetune's ``text_padding_weight``); the K codes
of a frame share ``audio_weight`` (1) in proportion to ``codebook_weights`` (default ``[100, 1, ..., 1]``,
moshi-finetune's ``first_codebook_weight_multiplier``: the semantic codebook carries the content, the acoustic ones
mostly voice and fine detail). So per frame the text and the audio weigh the same, as moshi-finetune's
``text_loss + audio_loss``, and most of the audio weight is on codebook 0.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align.adapter import PolicyAdapter as _EvalPolicyAdapter
from align.building import bpe_tokenizer
from align.policy import PAD_CHANNEL, SPEECH, TEXT, Trajectory, as_audio, flat_stream

AUDIO_PLACEHOLDER = "<audio>"
MIMI_RATE = 24_000
HUB_ID = "kmhf/hf-moshiko"
PIPER_CACHE = "~/.cache/wavalign/moshi-piper"  # Piper waveforms of prompts and reference texts, by text
LAYOUT_FILE = "wavalign_moshi.json"  # the text-stream ids of a folder saved by `save_tiny_moshi`
# Moshi's own text-stream ids (kyutai moshi/models/loaders.py: existing_text_padding_id=3, end_of_text_padding_id=0)
MOSHI_TEXT_PAD_ID = 3
MOSHI_TEXT_EPAD_ID = 0


@dataclass
class MoshiPrompt:
    """A conversation laid out on Moshi's streams, undelayed: one entry per frame.

    Attributes:
        text: Moshi's text stream (frame 0: the initial token ``vocab_size``).
        moshi: K lists, Moshi's audio codes per frame (frame 0: ``audio_vocab_size``).
        user: K lists, the user's audio codes per frame (frame 0: ``audio_vocab_size``).
        sources: how each turn was made (``audio``, ``piper``), for the record.
    """

    text: list[int]
    moshi: list[list[int]]
    user: list[list[int]]
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.text)
        if n < 1 or any(len(s) != n for s in (*self.moshi, *self.user)) or len(self.moshi) != len(self.user):
            raise ValueError("a Moshi prompt needs the same number of frames (>= 1) in every stream")

    def __len__(self) -> int:
        return len(self.text)


class MoshiPolicy:
    """`align.policy.PolicyAdapter` for a transformers `MoshiForConditionalGeneration` (its Mimi codec inside).

    Args:
        model: the Moshi model; its ``audio_encoder`` (Mimi) is frozen here (only the transformers train).
        tokenizer: the text tokenizer of the text stream.
        text_pad_id, text_epad_id: the text stream's padding and end-of-padding ids (epad None: not used).
        end_id: the text token that ends an answer (None: answers end by a padding run or the frame limit).
        end_pad_frames: a run of this many text paddings after a word ends the answer (0: off).
        codebook_weights, audio_weight, text_weight, text_pad_weight: the SFT weights (see the module docstring).
        voice: the Piper voice for text turns and reference texts (None: the packaged en_US-joe-medium).
        seed: Piper's noise seed (the same text is always spoken the same way).
        cache_dir: where Piper's waveforms are kept between runs (None: memory only).
    """

    family = "moshi"
    hears_audio = True

    def __init__(self, model: Any, tokenizer: Any, *, text_pad_id: int, text_epad_id: int | None = None,
                 end_id: int | None = None, end_pad_frames: int = 25, codebook_weights: Sequence[float] | None = None,
                 audio_weight: float = 1.0, text_weight: float = 1.0, text_pad_weight: float = 0.5,
                 voice: str | None = None, seed: int = 0, cache_dir: str | None = PIPER_CACHE):
        config = model.config
        self.model, self.tokenizer = model, tokenizer
        self.K = int(config.num_codebooks)
        self.vocab_size, self.audio_vocab_size = int(config.vocab_size), int(config.audio_vocab_size)
        self.init_text_id, self.audio_pad_id = self.vocab_size, self.audio_vocab_size  # the embeddings' extra rows
        for name, value in (("text_pad_id", text_pad_id), ("text_epad_id", text_epad_id), ("end_id", end_id)):
            if value is not None and not 0 <= int(value) < self.vocab_size:
                raise ValueError(f"{name} {value} is outside the text vocabulary 0..{self.vocab_size - 1}")
        if len(tokenizer) > self.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens, the model's text vocabulary "
                             f"{self.vocab_size}")
        specials = [i for i in (text_pad_id, text_epad_id, end_id) if i is not None]
        if len(set(specials)) != len(specials):
            raise ValueError(f"text_pad_id, text_epad_id and end_id must differ, got {specials}")
        self.text_pad_id, self.text_epad_id = int(text_pad_id), None if text_epad_id is None else int(text_epad_id)
        self.end_id = None if end_id is None else int(end_id)
        if end_pad_frames < 0:
            raise ValueError(f"end_pad_frames must be >= 0, got {end_pad_frames}")
        self.end_pad_frames = int(end_pad_frames)
        weights = [100.0] + [1.0] * (self.K - 1) if codebook_weights is None else [float(w) for w in codebook_weights]
        if len(weights) != self.K or any(w < 0 for w in weights) or not sum(weights) > 0:
            raise ValueError(f"codebook_weights must be {self.K} non-negative numbers, not all 0; got {weights}")
        # a frame's K codes weigh audio_weight together
        self.codebook_weights = [audio_weight * w / sum(weights) for w in weights]
        self.text_weight, self.text_pad_weight = float(text_weight), float(text_pad_weight)
        self.voice_name, self.seed, self.cache_dir = voice, int(seed), cache_dir
        self._voice: Any = None
        self._silence: list[int] | None = None
        self._speech_cache: dict[str, list[list[int]]] = {}
        self.counts = {"user_turns_audio": 0, "user_turns_piper": 0, "sft_speech_tokens": 0,
                       "sft_reference_audio": 0, "sft_piper": 0}
        self.last_generation_logp: list[list[float]] = []  # per rollout of the last generate, see `generate`
        model.audio_encoder.requires_grad_(False)

    # ------------------------------------------------------------------------------------------- audio <-> codes
    @property
    def _mimi(self) -> Any:
        return self.model.audio_encoder

    def encode_audio(self, audio: Any) -> list[list[int]]:
        """Mimi codes (K lists, one per 12.5 Hz frame) of a path / `Audio` / (samples, rate), resampled to 24 kHz."""
        from rewards.audio import resample

        samples, rate = as_audio(audio)
        if samples.ndim != 1 or len(samples) == 0:
            raise ValueError("an audio turn must be a non-empty mono waveform")
        samples = resample(samples, rate, MIMI_RATE)
        return self._encode(samples)

    @torch.no_grad()
    def _encode(self, samples: np.ndarray) -> list[list[int]]:
        mimi = self._mimi
        x = torch.as_tensor(np.asarray(samples, dtype=np.float32), device=_device(mimi))[None, None]
        codes = mimi.encode(x.to(_dtype(mimi)), num_quantizers=self.K)[0]
        return codes[0].tolist()

    def silence(self) -> list[int]:
        """The K codes of one silent frame (Mimi's encoding of 1920 zeros): a silent stream repeats them."""
        if self._silence is None:
            self._silence = [c[0] for c in self._encode(np.zeros(_frame_samples(self.model), dtype=np.float32))]
        return list(self._silence)

    def speak(self, text: str) -> list[list[int]]:
        """Mimi codes of ``text`` spoken by the Piper voice (22.05 kHz resampled to 24 kHz), cached per text (the
        waveform also on disk under ``cache_dir``: Piper is the slow part of building prompts and targets)."""
        if text not in self._speech_cache:
            self._speech_cache[text] = self.encode_audio(self._piper(text))
        return [list(c) for c in self._speech_cache[text]]

    def _piper(self, text: str) -> tuple[np.ndarray, int]:
        import hashlib

        path = None
        if self.cache_dir is not None:
            key = hashlib.sha256(f"{self.voice_name or 'packaged'}|{self.seed}|{text}".encode()).hexdigest()[:32]
            path = Path(self.cache_dir).expanduser() / f"{key}.npz"
            if path.is_file():
                with np.load(path) as saved:
                    if str(saved["text"]) == text:
                        return saved["samples"].astype(np.float32), int(saved["rate"])
        if self._voice is None:
            from evalsuite.piper_tts import load_voice

            self._voice = load_voice(self.voice_name)
        samples, rate = self._voice.synthesize(text, seed=self.seed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, samples=samples, rate=rate, text=text)
            tmp.replace(path)
        return samples, rate

    @torch.no_grad()
    def decode_speech(self, speech_tokens: Sequence[Sequence[int]]) -> tuple[np.ndarray, int]:
        """Mimi's waveform (24 kHz mono float32) of K lists of codes (one per frame)."""
        if len(speech_tokens) != self.K or len({len(c) for c in speech_tokens}) > 1:
            raise ValueError(f"speech tokens must be {self.K} equally long lists of codes")
        if not len(speech_tokens[0]):
            return np.zeros(0, dtype=np.float32), MIMI_RATE
        codes = torch.tensor([list(c) for c in speech_tokens], dtype=torch.long, device=_device(self._mimi))[None]
        if codes.min() < 0 or codes.max() >= self.audio_vocab_size:
            raise ValueError(f"audio codes out of range 0..{self.audio_vocab_size - 1}")
        audio = self._mimi.decode(codes).audio_values[0, 0].float().cpu().numpy()
        return audio.astype(np.float32), MIMI_RATE

    # ------------------------------------------------------------------------------------------- prompts
    def build_prompt(self, messages: list[dict], audios: list | None = None) -> MoshiPrompt:
        """The conversation on Moshi's streams (see the module docstring); ``<audio>`` takes the next of ``audios``.

        A turn's content may mix text and audio parts: the text parts are spoken by Piper and the pieces joined in
        order. Turns are user or assistant; a system message is an error (Moshi has no system prompt).
        """
        audios = list(audios or [])
        turns = [(m.get("role"), _content_parts(m.get("content"))) for m in messages]
        wanted = sum(kind == "audio" for _, parts in turns for kind, _ in parts)
        if wanted != len(audios):
            raise ValueError(f"{wanted} {AUDIO_PLACEHOLDER} placeholders in the messages, {len(audios)} audios")
        if not turns:
            raise ValueError("a Moshi prompt needs at least one turn")
        silence = self.silence()
        text = [self.init_text_id]
        moshi = [[self.audio_pad_id] for _ in range(self.K)]
        user = [[self.audio_pad_id] for _ in range(self.K)]
        sources: list[str] = []
        pending = iter(audios)
        for role, parts in turns:
            if role not in ("user", "assistant"):
                raise ValueError(f"Moshi takes user and assistant turns only, got a {role!r} turn (it has no system "
                                 "prompt)")
            spoken: list[list[int]] = [[] for _ in range(self.K)]
            words = []
            for kind, value in parts:
                if kind == "audio":
                    codes, source = self.encode_audio(next(pending)), "audio"
                elif value.strip():
                    codes, source = self.speak(value.strip()), "piper"
                    words.append(value.strip())
                else:
                    continue
                spoken = [a + b for a, b in zip(spoken, codes)]
                sources.append(f"{role}:{source}")
                if role == "user":
                    self.counts[f"user_turns_{source}"] += 1
            if not spoken[0]:
                raise ValueError(f"a {role} turn with nothing to say")
            n = len(spoken[0])
            if role == "user":
                text += [self.text_pad_id] * n
                user = [u + s for u, s in zip(user, spoken)]
                moshi = [m + [silence[k]] * n for k, m in enumerate(moshi)]
            else:
                turn_text, turn_codes = self.layout(" ".join(words), spoken)
                text += turn_text
                moshi = [m + c + [silence[k]] for k, (m, c) in enumerate(zip(moshi, turn_codes))]
                user = [u + [silence[k]] * len(turn_text) for k, u in enumerate(user)]
        return MoshiPrompt(text=text, moshi=moshi, user=user, sources=sources)

    # ------------------------------------------------------------------------------------------- layout
    def _text_tokens_by_word(self, text: str) -> list[tuple[int, list[int]]]:
        """(start character, token ids) of each word of ``text`` (tokens grouped by their character offsets)."""
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        if not words:
            return []
        try:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
        except (NotImplementedError, ValueError, TypeError):  # a slow tokenizer: one word at a time
            return [(a, self.tokenizer((" " if a else "") + text[a:b], add_special_tokens=False)["input_ids"])
                    for a, b in words]
        out: list[tuple[int, list[int]]] = [(a, []) for a, _ in words]
        w = 0
        for token, (start, _) in zip(enc["input_ids"], offsets):
            while w < len(words) - 1 and start >= words[w][1]:
                w += 1
            out[w][1].append(int(token))
        return [(a, ids) for a, ids in out if ids]

    def layout(self, text: str, codes: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
        """The text stream and the K audio streams of an answer saying ``text`` with speech ``codes`` (M frames).

        Returns (text stream of N frames, K lists of N-1 codes): the words on the M speech frames (a word that does
        not fit any more spills onto extra silent frames), then the closing frame(s) (module docstring).
        """
        silence = self.silence()
        codes = [list(c) for c in codes]
        if len(codes) != self.K or len({len(c) for c in codes}) != 1:
            raise ValueError(f"reference speech must be {self.K} equally long lists of codes")
        frames = len(codes[0])
        stream: list[int] = [self.text_pad_id] * frames
        length = max(len(text), 1)
        free = 0
        for start, ids in self._text_tokens_by_word(text):
            pos = max(free, int(start * frames / length))
            if self.text_epad_id is not None and pos > 0 and pos - 1 < len(stream) and \
                    stream[pos - 1] == self.text_pad_id:
                stream[pos - 1] = self.text_epad_id
            for token in ids:
                if token in (self.text_pad_id, self.text_epad_id, self.end_id):
                    raise ValueError(f"the reference text tokenizes to the reserved text id {token}")
                if pos >= len(stream):
                    stream.append(self.text_pad_id)
                stream[pos] = token
                pos += 1
            free = pos
        if self.end_id is not None:
            stream.append(self.end_id)
        else:  # no end token: the answer ends with a run of end_pad_frames paddings (at least the closing frame)
            trailing = len(stream) - len(_rstrip(stream, self.text_pad_id))
            stream += [self.text_pad_id] * max(1, self.end_pad_frames - trailing)
        extra = len(stream) - 1 - frames
        return stream, [c + [silence[k]] * extra for k, c in enumerate(codes)]

    def sft_target(self, prompt_ids: MoshiPrompt, text: str, speech_tokens: Any = None, *,
                   audio: Any = None) -> Trajectory:
        """The reference answer on Moshi's streams; its speech: ``speech_tokens`` (K lists of codes), else the
        reference ``audio`` Mimi-encoded, else ``text`` spoken by Piper and Mimi-encoded."""
        if not text.strip():
            raise ValueError("the reference answer has no text")
        if speech_tokens is not None:
            codes, source = [list(c) for c in speech_tokens], "sft_speech_tokens"
        elif audio is not None:
            codes, source = self.encode_audio(audio), "sft_reference_audio"
        else:
            codes, source = self.speak(text.strip()), "sft_piper"
        self.counts[source] += 1
        stream, audio_codes = self.layout(text.strip(), codes)
        return self.trajectory(prompt_ids, stream, audio_codes, finished=True)

    def trajectory(self, prompt: MoshiPrompt, text_ids: Sequence[int], codes: Sequence[Sequence[int]],
                   finished: bool) -> Trajectory:
        """A completion: N text tokens and K lists of N-1 codes (undelayed frames)."""
        text_ids = [int(t) for t in text_ids]
        codes = [[int(c) for c in cb] for cb in codes]
        if not text_ids or len(codes) != self.K or any(len(c) != len(text_ids) - 1 for c in codes):
            raise ValueError(f"a Moshi completion is N >= 1 text tokens and {self.K} lists of N-1 codes")
        streams = [("text", text_ids, TEXT, 1.0)] + [(f"audio_{k}", c, SPEECH, 1.0) for k, c in enumerate(codes)]
        ids, channels, spans, _ = flat_stream(streams)
        pads = (self.text_pad_id, self.text_epad_id)
        weights = [self.text_weight * (self.text_pad_weight if t in pads else 1.0) for t in text_ids]
        for k, c in enumerate(codes):
            weights += [self.codebook_weights[k]] * len(c)
        words = [t for t in text_ids if t not in (*pads, self.end_id, self.init_text_id)]
        return Trajectory(prompt_ids=prompt, completion_ids=ids, channels=channels,
                          text=self.tokenizer.decode(words, skip_special_tokens=True), speech_tokens=codes,
                          finished=finished, streams=spans, weights=weights)

    @staticmethod
    def split(traj: Trajectory) -> tuple[list[int], list[list[int]]]:
        """(text stream, K lists of codes) of a trajectory."""
        k = 0
        codes = []
        while f"audio_{k}" in traj.streams:
            codes.append(traj.stream(f"audio_{k}"))
            k += 1
        return traj.stream("text"), codes

    def _ends(self, history: Sequence[int]) -> bool:
        """Whether the text stream ``history`` (the completion so far) ends the answer at its last token."""
        if self.end_id is not None and history[-1] == self.end_id:
            return True
        if not self.end_pad_frames or len(history) < self.end_pad_frames:
            return False
        tail = history[-self.end_pad_frames:]
        before = history[:-self.end_pad_frames]
        said = any(t not in (self.text_pad_id, self.text_epad_id) for t in before)
        return said and all(t == self.text_pad_id for t in tail)

    # ------------------------------------------------------------------------------------------- delayed streams
    def _positions(self, prompt: MoshiPrompt, text_ids: Sequence[int], codes: Sequence[Sequence[int]]
                   ) -> tuple[list[int], list[list[int]], list[list[int]]]:
        """The model's input positions 0 .. P+N-1 (text, delayed Moshi codes, delayed user codes) of a trajectory."""
        silence = self.silence()
        n = len(text_ids)
        text = list(prompt.text) + list(text_ids)
        # undelayed frames; the last completion frame closes codebook 0 (its acoustic codes never enter: delayed out)
        moshi = [list(m) + list(c) + [self.audio_pad_id] for m, c in zip(prompt.moshi, codes)]
        user = [list(u) + [silence[k]] * n for k, u in enumerate(prompt.user)]
        return text, _delay(moshi, self.audio_pad_id), _delay(user, self.audio_pad_id)

    # ------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def generate(self, prompts: list[MoshiPrompt], n: int, *, temperature: float = 0.7, top_p: float = 0.9,
                 max_new_tokens: int = 256, seed: int | None = None, batch_size: int | None = None
                 ) -> list[list[Trajectory]]:
        """``n`` rollouts per prompt, frame by frame as Moshi samples: the text token, then codebooks 0 .. K-1.

        The same temperature and top-p apply to the text and the audio (temperature 0: greedy). ``max_new_tokens``
        counts frames. With ``seed`` the draw is reproducible (a private generator; the global RNG is untouched).
        Rows of equal prompt length are batched (at most ``batch_size`` rows, default all). After the call,
        ``last_generation_logp`` holds, per rollout in flat order, the log-prob of each completion token under the
        logits it was sampled from (at temperature 1): what `logprobs` must reproduce.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 frame, got {max_new_tokens}")
        rows = [p for p in prompts for _ in range(n)]
        device = _device(self.model)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(int(seed))
        was_training = self.model.training
        self.model.eval()
        results: list[tuple[list[int], list[list[int]], bool, list[float]] | None] = [None] * len(rows)
        try:
            by_length: dict[int, list[int]] = {}
            for i, p in enumerate(rows):
                by_length.setdefault(len(p), []).append(i)
            for idx in by_length.values():
                step = batch_size or len(idx)
                for start in range(0, len(idx), step):
                    chunk = idx[start:start + step]
                    for i, out in zip(chunk, self._sample([rows[i] for i in chunk], temperature, top_p,
                                                          max_new_tokens, generator, device)):
                        results[i] = out
        finally:
            self.model.train(was_training)
        trajs, self.last_generation_logp = [], []
        for p, (text_ids, codes, finished, logp) in zip(rows, results):  # type: ignore[misc]
            trajs.append(self.trajectory(p, text_ids, codes, finished))
            self.last_generation_logp.append(logp)
        return [trajs[i * n:(i + 1) * n] for i in range(len(prompts))]

    def _sample(self, rows: list[MoshiPrompt], temperature: float, top_p: float, frames: int,
                generator: torch.Generator | None, device: torch.device
                ) -> list[tuple[list[int], list[list[int]], bool, list[float]]]:
        model, K, B = self.model, self.K, len(rows)
        P = len(rows[0])
        silence = self.silence()
        empty = [[] for _ in range(K)]
        prompt_text, prompt_moshi, prompt_user = zip(*(self._positions(p, [], empty) for p in rows))
        # the prompt's positions 0 .. P-1 (position P is the answer's first)
        text_in = torch.tensor([t[:P] for t in prompt_text], dtype=torch.long, device=device)
        moshi_in = torch.tensor([[c[:P] for c in m] for m in prompt_moshi], dtype=torch.long, device=device)
        user_in = torch.tensor([[c[:P] for c in u] for u in prompt_user], dtype=torch.long, device=device)
        # position P holds the delayed acoustic codes of the prompt's last frame (Moshi's: given, not sampled)
        given = torch.tensor([[p.moshi[k][P - 1] for k in range(K)] for p in rows], dtype=torch.long, device=device)
        # the user stream goes on silent: position P still carries its last spoken frame's acoustic codes
        user_first = torch.tensor([[silence[0]] + [p.user[k][P - 1] for k in range(1, K)] for p in rows],
                                  dtype=torch.long, device=device)
        user_next = torch.tensor(silence, dtype=torch.long, device=device)[None].expand(B, K)
        out = model(input_ids=text_in, moshi_audio_codes=moshi_in, user_audio_codes=user_in, use_cache=True)
        cache, logits, hidden = out.cache, out.logits[:, -1], out.last_hidden_state[:, -1:]
        texts: list[list[int]] = [[] for _ in range(B)]
        codes = torch.zeros((B, K, frames), dtype=torch.long, device=device)  # delayed codes per answer position
        logps: list[list[float]] = [[] for _ in range(B)]  # text, then per position its scored codes
        code_logp = torch.zeros((B, K, frames), dtype=torch.float32, device=device)
        length = [0] * B  # positions per row (N)
        done = [False] * B
        for i in range(frames):
            token, lp = _pick(logits, temperature, top_p, generator)
            last = []
            for r in range(B):
                if not done[r]:
                    texts[r].append(int(token[r]))
                    logps[r].append(float(lp[r]))
                    length[r] = i + 1
                last.append(done[r] or i == frames - 1 or self._ends(texts[r]))
            last_t = torch.tensor(last, device=device)
            # the depth transformer: codebook 0 (closed with the pad id at the answer's last position), then 1 .. K-1
            depth_cache = _depth_cache(model)
            step_in = token[:, None]
            for k in range(K):
                dl = model.depth_decoder(input_ids=step_in, last_hidden_state=hidden, cache=depth_cache,
                                         use_cache=True).logits[:, -1]
                code, clp = _pick(dl, temperature, top_p, generator)
                if k == 0:
                    code = torch.where(last_t, torch.full_like(code, self.audio_pad_id), code)
                elif i == 0:
                    code = given[:, k]
                codes[:, k, i], code_logp[:, k, i] = code, clp
                step_in = code[:, None]
            for r in range(B):
                done[r] = last[r]
            if all(done):
                break
            user_step = user_first if i == 0 else user_next
            out = model(input_ids=token[:, None], moshi_audio_codes=codes[:, :, i:i + 1],
                        user_audio_codes=user_step[:, :, None], cache=cache, use_cache=True)
            cache, logits, hidden = out.cache, out.logits[:, -1], out.last_hidden_state[:, -1:]
        results = []
        codes_l, code_logp_l = codes.tolist(), code_logp.tolist()
        for r in range(B):
            n_r = length[r]
            # undelayed frame P+j: codebook 0 at answer position j, codebook k >= 1 at position j+1
            frame_codes = [codes_l[r][0][:n_r - 1]] + [codes_l[r][k][1:n_r] for k in range(1, K)]
            lp = logps[r] + code_logp_l[r][0][:n_r - 1]
            for k in range(1, K):
                lp += code_logp_l[r][k][1:n_r]
            finished = self._ends(texts[r])
            results.append((texts[r], frame_codes, finished, lp))
        return results

    # ------------------------------------------------------------------------------------------- training
    def logprobs(self, trajs: Sequence[Trajectory], *, temperature: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs of every completion token, as `generate` computes them.

        One pass of the temporal transformer over positions 0 .. P+N-2 of every row (right-padded), its text head
        at positions P-1 .. P+N-2 (the text tokens), then one pass of the depth transformer over the N answer
        positions of every row (input ``[text[t], d_0[t] .. d_{K-2}[t]]`` with h_{t-1}) for the codes. Returns
        ``logp`` [B, T], ``mask`` [B, T], ``channels`` [B, T] (T = the longest flat completion).
        """
        model, K = self.model, self.K
        device = _device(model)
        rows = [self._positions(t.prompt_ids, *self.split(t)) for t in trajs]
        prompt_lens = [len(t.prompt_ids) for t in trajs]
        answer_lens = [len(t.stream("text")) for t in trajs]
        width = max(len(text) - 1 for text, _, _ in rows)
        B = len(trajs)
        text_in = torch.zeros((B, width), dtype=torch.long)
        moshi_in = torch.full((B, K, width), self.audio_pad_id, dtype=torch.long)
        user_in = torch.full((B, K, width), self.audio_pad_id, dtype=torch.long)
        attention = torch.zeros((B, width), dtype=torch.long)
        for i, (text, moshi, user) in enumerate(rows):
            L = len(text) - 1  # the last position is never fed: nothing is predicted from it
            text_in[i, :L] = torch.tensor(text[:L])
            moshi_in[i, :, :L] = torch.tensor([c[:L] for c in moshi])
            user_in[i, :, :L] = torch.tensor([c[:L] for c in user])
            attention[i, :L] = 1
        out = model(input_ids=text_in.to(device), moshi_audio_codes=moshi_in.to(device),
                    user_audio_codes=user_in.to(device), attention_mask=attention.to(device))
        logits, hidden = out.logits, out.last_hidden_state
        # per row: the N positions t = P .. P+N-1, predicted from t-1
        sel_rows = torch.cat([torch.full((n,), i, dtype=torch.long) for i, n in enumerate(answer_lens)]).to(device)
        sel_cols = torch.cat([torch.arange(p - 1, p - 1 + n) for p, n in zip(prompt_lens, answer_lens)]).to(device)
        text_targets, depth_in, depth_targets = [], [], []
        for (text, moshi, _), p, n in zip(rows, prompt_lens, answer_lens):
            for t in range(p, p + n):
                text_targets.append(text[t])
                depth_in.append([text[t]] + [moshi[k][t] for k in range(K - 1)])
                depth_targets.append([moshi[k][t] for k in range(K)])
        text_logits = logits[sel_rows, sel_cols].float() / temperature
        text_targets_t = torch.tensor(text_targets, device=device)
        text_lp = text_logits.gather(-1, text_targets_t[:, None]).squeeze(-1) - text_logits.logsumexp(-1)
        depth_logits = model.depth_decoder(
            input_ids=torch.tensor(depth_in, device=device), last_hidden_state=hidden[sel_rows, sel_cols][:, None],
            attention_mask=torch.ones((len(depth_in), K), dtype=torch.long, device=device)).logits
        depth_logits = depth_logits.float() / temperature
        targets = torch.tensor(depth_targets, device=device).clamp(max=self.audio_vocab_size - 1)  # pads: unscored
        code_lp = depth_logits.gather(-1, targets[..., None]).squeeze(-1) - depth_logits.logsumexp(-1)  # [R, K]
        longest = max(len(t.completion_ids) for t in trajs)
        logp_rows, start = [], 0
        for n in answer_lens:
            text_part = text_lp[start:start + n]
            parts = [text_part, code_lp[start:start + n - 1, 0]] + [code_lp[start + 1:start + n, k]
                                                                      for k in range(1, K)]
            row = torch.cat(parts)
            logp_rows.append(torch.nn.functional.pad(row, (0, longest - row.shape[0])))
            start += n
        logp = torch.stack(logp_rows)
        mask = torch.zeros((B, longest), dtype=torch.bool)
        channels = torch.full((B, longest), PAD_CHANNEL, dtype=torch.long)
        for i, t in enumerate(trajs):
            mask[i, :len(t.completion_ids)] = True
            channels[i, :len(t.channels)] = torch.tensor(t.channels, dtype=torch.long)
        mask = mask.to(device)
        return logp.masked_fill(~mask, 0.0), mask, channels.to(device)

    def info(self) -> dict[str, Any]:
        config = self.model.config
        mimi = config.audio_encoder_config
        return {
            "family": self.family,
            "model_class": type(self.model).__name__,
            "model": getattr(config, "_name_or_path", None) or None,
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "codebooks": self.K, "text_vocab_size": self.vocab_size, "audio_vocab_size": self.audio_vocab_size,
            "codec": {"name": "mimi", "sample_rate": int(mimi.sampling_rate), "frame_rate": float(mimi.frame_rate)},
            "acoustic_delay": 1,
            "text_pad_id": self.text_pad_id, "text_epad_id": self.text_epad_id, "end_id": self.end_id,
            "end_pad_frames": self.end_pad_frames,
            "ends": "text end_id, or end_pad_frames text paddings after a word, else cut at max_new_tokens frames",
            "sft_weights": {"text": self.text_weight, "text_pad": self.text_pad_weight,
                            "codebooks": self.codebook_weights},
            "user_text_turns": "spoken by Piper, then Mimi-encoded",
            "sft_speech": "reference audio Mimi-encoded, else the reference text spoken by Piper",
            "voice": self._voice.info() if self._voice is not None else (self.voice_name or "packaged Piper voice"),
            "counts": dict(self.counts),
        }


class MoshiEvalAdapter(_EvalPolicyAdapter):
    """``wavalign eval --model moshi [--model-arg path=DIR]``: Moshi answering in both channels (greedy by default).

    Spoken questions reach it as audio (its user stream); ``--model-arg`` keys are `build_moshi_policy`'s
    (``path``, ``dtype``, ``device``, ``end_pad_frames``...) or `align.adapter.PolicyAdapter`'s
    (``max_new_tokens`` = frames, ``temperature``, ``checkpoint``...).
    """

    def __init__(self, *, name: str | None = None, **kwargs: Any):
        path = kwargs.get("path")
        if name is None and not kwargs.get("checkpoint"):
            name = f"moshi-{Path(path).name}" if path else "moshi"
        super().__init__(policy="moshi", name=name, **kwargs)


# ----------------------------------------------------------------------------------------------- builders
def build_moshi_policy(path: str | None = None, *, hub_id: str = HUB_ID, dtype: str = "auto", device: str = "cpu",
                       text_pad_id: int | None = None, text_epad_id: int | None = None, end_id: int | None = None,
                       end_pad_frames: int = 25, codebook_weights: Sequence[float] | None = None,
                       audio_weight: float = 1.0, text_pad_weight: float = 0.5, voice: str | None = None,
                       seed: int = 0, piper_cache: str | None = PIPER_CACHE) -> MoshiPolicy:
    """Moshi from a local folder (``path``) or the Hub (``hub_id``, default the public ``kmhf/hf-moshiko``).

    The text-stream ids default to the folder's ``wavalign_moshi.json`` (written by `save_tiny_moshi`), else
    Moshi's own (padding 3, end of padding 0; ``end_id`` the tokenizer's EOS, none for the public tokenizer).
    ``dtype``: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.
    """
    from transformers import AutoConfig, AutoTokenizer, MoshiForConditionalGeneration

    if path is not None:
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not a model folder (no config.json)")
        source, where = str(folder), f"folder {folder}"
    else:
        source, where = hub_id, f"'{hub_id}'"
    try:
        try:  # a cached Hub checkpoint loads without asking the network
            config = AutoConfig.from_pretrained(source, local_files_only=True)
        except OSError:
            config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the Moshi config of {where} ({_first_line(e)}); offline, pass path=DIR of a "
                         "downloaded checkpoint") from e
    if getattr(config, "model_type", None) != "moshi":
        arch = ", ".join(getattr(config, "architectures", None) or []) or getattr(config, "model_type", "?")
        raise ValueError(f"{where} holds a {arch} checkpoint, not Moshi (MoshiForConditionalGeneration)")
    torch_dtype = _torch_dtype(dtype, device)
    try:
        model = MoshiForConditionalGeneration.from_pretrained(source, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if model.config.audio_vocab_size is None:
            raise ValueError("its config has no audio_vocab_size")
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load the Moshi weights or tokenizer of {where} ({_first_line(e)})") from e
    model.to(device)
    layout: dict[str, Any] = {}
    if path is not None and (Path(source) / LAYOUT_FILE).is_file():
        layout = json.loads((Path(source) / LAYOUT_FILE).read_text(encoding="utf-8"))
    return MoshiPolicy(
        model, tokenizer,
        text_pad_id=text_pad_id if text_pad_id is not None else layout.get("text_pad_id", MOSHI_TEXT_PAD_ID),
        text_epad_id=text_epad_id if text_epad_id is not None else layout.get("text_epad_id", MOSHI_TEXT_EPAD_ID),
        end_id=end_id if end_id is not None else layout.get("end_id", tokenizer.eos_token_id),
        end_pad_frames=end_pad_frames, codebook_weights=codebook_weights, audio_weight=audio_weight,
        text_pad_weight=text_pad_weight, voice=voice, seed=seed, cache_dir=piper_cache)


TINY_SPECIALS = ["<unk>", "<pad>", "<epad>", "</s>"]


def _tiny_tokenizer(corpus: Sequence[str], vocab_size: int) -> Any:
    return bpe_tokenizer(corpus, TINY_SPECIALS, vocab_size=vocab_size, unk_token="<unk>", pad_token="<pad>",
                         eos_token="</s>")


def _tiny_model(text_vocab: int, *, hidden_size: int, layers: int, codebooks: int, audio_vocab: int,
                depth_hidden: int, seed: int) -> Any:
    from transformers import MoshiConfig, MoshiForConditionalGeneration

    mimi = {"model_type": "mimi", "hidden_size": 32, "num_filters": 4, "upsampling_ratios": [8, 6, 5, 4],
            "codebook_size": audio_vocab, "codebook_dim": 16, "num_quantizers": max(codebooks, 2),
            "vector_quantization_hidden_dimension": 16, "upsample_groups": 32, "num_hidden_layers": 1,
            "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 2}
    depth = {"hidden_size": depth_hidden, "num_hidden_layers": 1, "num_attention_heads": 2, "ffn_dim": 2 * depth_hidden}
    config = MoshiConfig(vocab_size=text_vocab, hidden_size=hidden_size, num_hidden_layers=layers,
                         num_attention_heads=4, ffn_dim=2 * hidden_size, num_codebooks=codebooks,
                         max_position_embeddings=1024, audio_encoder_config=mimi, depth_decoder_config=depth)
    torch.manual_seed(seed)
    model = MoshiForConditionalGeneration(config)
    reinit_flexible_linears(model)
    return model.eval()


def reinit_flexible_linears(model: Any, std: float = 0.02) -> None:
    """Re-initialise the depth transformer's per-codebook weights (`MoshiFlexibleLinear` starts at std 1, which
    gives logits of several hundred in a random model) at ``std``."""
    from transformers.models.moshi.modeling_moshi import MoshiFlexibleLinear

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, MoshiFlexibleLinear):
                module.weight.normal_(0.0, std)


def build_tiny_moshi_policy(corpus: Sequence[str] = (), *, hidden_size: int = 64, layers: int = 2,
                            codebooks: int = 4, audio_vocab: int = 64, depth_hidden: int = 32,
                            text_vocab_size: int = 300, end_pad_frames: int = 25,
                            codebook_weights: Sequence[float] | None = None, audio_weight: float = 1.0,
                            text_pad_weight: float = 0.5, seed: int = 0, piper_cache: str | None = PIPER_CACHE
                            ) -> MoshiPolicy:
    """A tiny random `MoshiForConditionalGeneration` (with a tiny random Mimi: 24 kHz, 12.5 Hz frames, the real
    classes) and a byte-level BPE tokenizer trained on ``corpus`` in memory; seeded. It babbles, but through the
    real computation (rollouts, Mimi encoding and decoding, log-probs, losses)."""
    tokenizer = _tiny_tokenizer(corpus, text_vocab_size)
    model = _tiny_model(len(tokenizer), hidden_size=hidden_size, layers=layers, codebooks=codebooks,
                        audio_vocab=audio_vocab, depth_hidden=depth_hidden, seed=seed)
    ids = _tiny_layout(tokenizer)
    return MoshiPolicy(model, tokenizer, **ids, end_pad_frames=end_pad_frames, codebook_weights=codebook_weights,
                       audio_weight=audio_weight, text_pad_weight=text_pad_weight, seed=seed, cache_dir=piper_cache)


def _tiny_layout(tokenizer: Any) -> dict[str, int]:
    pad, epad, end = tokenizer.convert_tokens_to_ids(["<pad>", "<epad>", "</s>"])
    return {"text_pad_id": int(pad), "text_epad_id": int(epad), "end_id": int(end)}


def save_tiny_moshi(folder: str | Path, corpus: Sequence[str] = (), **kwargs: Any) -> Path:
    """Write a tiny random Moshi (model, tokenizer, text-stream ids) to ``folder``, loadable with
    ``build_moshi_policy(path=folder)`` (and ``wavalign eval --model moshi --model-arg path=FOLDER``)."""
    folder = Path(folder)
    policy = build_tiny_moshi_policy(corpus, **kwargs)
    policy.model.save_pretrained(folder)
    policy.tokenizer.save_pretrained(folder)
    (folder / LAYOUT_FILE).write_text(json.dumps(_tiny_layout(policy.tokenizer)) + "\n", encoding="utf-8")
    return folder


def build_random_moshi_policy(shape: str = "real", *, dtype: str = "auto", device: str = "cpu", seed: int = 0
                              ) -> MoshiPolicy:
    """Random weights at Moshi 7B's shape (``real``: 4096 x 32 layers, depth 1024 x 6, 8 codebooks of 2048, the
    real Mimi; ~7.7 B parameters) or a ``reduced`` one for a CPU (1024 x 4 layers, depth 256 x 2, the real Mimi),
    for the step benchmark. The text tokenizer is the tiny in-memory BPE (its ids fit Moshi's 32000)."""
    from transformers import MimiConfig, MoshiConfig, MoshiForConditionalGeneration

    if shape == "real":
        config = MoshiConfig(audio_encoder_config=MimiConfig().to_dict(), depth_decoder_config={})
    elif shape == "reduced":
        config = MoshiConfig(hidden_size=1024, num_hidden_layers=4, num_attention_heads=8, ffn_dim=2816,
                             audio_encoder_config=MimiConfig().to_dict(),
                             depth_decoder_config={"hidden_size": 256, "num_hidden_layers": 2,
                                                   "num_attention_heads": 4, "ffn_dim": 704})
    else:
        raise ValueError(f"shape must be 'real' or 'reduced', got {shape!r}")
    torch_dtype = _torch_dtype(dtype, device)
    before = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        torch.set_default_dtype(torch_dtype)
        with torch.device(device):
            model = MoshiForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(before)
    reinit_flexible_linears(model)
    tokenizer = _tiny_tokenizer(["what is two plus two? two plus two is four."], 300)
    return MoshiPolicy(model.eval(), tokenizer, **_tiny_layout(tokenizer), seed=seed)


# ----------------------------------------------------------------------------------------------- helpers
def _delay(streams: Sequence[Sequence[int]], bos: int) -> list[list[int]]:
    """Codebook 0 as is; codebooks k >= 1 one frame later (BOS first), cut to the same length."""
    return [list(s) if k == 0 else [bos, *s[:-1]] for k, s in enumerate(streams)]


def _rstrip(stream: Sequence[int], value: int) -> list[int]:
    out = list(stream)
    while out and out[-1] == value:
        out.pop()
    return out


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [B], their log-probs under the raw logits [B]): greedy at temperature 0, else temperature + top-p."""
    logits = logits.float()
    logp = logits.log_softmax(-1)
    if temperature <= 0:
        token = logits.argmax(-1)
    else:
        probs = (logits / temperature).softmax(-1)
        if top_p < 1.0:
            sorted_p, order = probs.sort(-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p >= top_p  # keep the smallest prefix reaching top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return token, logp.gather(-1, token[:, None]).squeeze(-1)


def _depth_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.depth_decoder.config)


def _content_parts(content: Any) -> list[tuple[str, str]]:
    """A message's content as ("text", str) / ("audio", "") parts in order (``<audio>`` placeholders or HF parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        parts: list[tuple[str, str]] = []
        pieces = content.split(AUDIO_PLACEHOLDER)
        for k, piece in enumerate(pieces):
            if piece:
                parts.append(("text", piece))
            if k < len(pieces) - 1:
                parts.append(("audio", ""))
        return parts
    out: list[tuple[str, str]] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            out += _content_parts(part.get("text", ""))
        elif kind == "audio":
            out.append(("audio", ""))
        else:
            raise ValueError(f"unsupported message part {part!r}: use text or audio parts")
    return out


def _frame_samples(model: Any) -> int:
    mimi = model.config.audio_encoder_config
    return int(round(mimi.sampling_rate / mimi.frame_rate))


def _torch_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {dtype!r}")
    return table[dtype]


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _device(module: Any) -> torch.device:
    return next(module.parameters()).device


def _dtype(module: Any) -> torch.dtype:
    return next(module.parameters()).dtype


__all__ = ["MoshiEvalAdapter", "MoshiPolicy", "MoshiPrompt", "build_moshi_policy", "build_random_moshi_policy",
           "build_tiny_moshi_policy", "reinit_flexible_linears", "save_tiny_moshi"]
