"""The thinker–talker family: Qwen2.5-Omni (transformers' native `Qwen2_5OmniForConditionalGeneration`).

The thinker is a text LM that hears audio (Whisper-style features through its audio tower). The talker is a second
causal LM that writes codec codes conditioned on the thinker's states, and token2wav (a DiT to mel, then BigVGAN)
turns the codes into 24 kHz speech, 480 samples per code. A completion is two streams, laid end to end:

    text    the thinker's tokens, ending with EOS (<|im_end|>)               channel TEXT
    talker  the talker's codes, ending with a codec end code (pad or eos)    channel SPEECH

So GRPO (text only) reaches the thinker's text log-probs, and SFT reaches both streams. The talker's input is built
exactly as `Qwen2_5OmniForConditionalGeneration.generate` builds it (its padded-batch path, with an attention mask):
position i of the prompt gets the thinker's last hidden state plus its layer-0 embedding (zero at audio positions);
then the thinker's embedding of the speaker's text-BOS token plus ``codec_embed(pad)``; then the first reply token's
state plus ``codec_embed(bos)``, which predicts code 0. Each later step adds ``codec_embed(previous code)`` to the
next reply token's state; after the reply come the embeddings of the talker's text-EOS, then text-PAD, repeated.
Reply states are those of the text tokens before the last one (generate never runs the last token through the
thinker). Positions: the talker's own multimodal RoPE index over the prompt (`get_rope_index`), then consecutive.
`_talker_inputs` builds this sequence once, for sampling (incrementally, with a KV cache) and for the teacher-forced
log-probs (one forward), so both follow the same computation. The talker's log-probs are differentiable through the
thinker's states: a speech target trains the thinker's representations too (and the talker, unless frozen).

Reference speech for SFT (``sft_speech``): the talker's codes come from a speech tokenizer that Qwen has not
released, so there is no public way to turn a reference recording into talker codes. Choices:

- ``self`` (default): the talker's own greedy codes for the reference text, decoded from the *starting* model (the
  loop builds every SFT target once, before training). The SFT term then anchors the speech to what the starting
  talker said for that text, the role SFT plays in WavAlign, while the text SFT target is the reference text.
- ``encoder``: ``speech_encoder="package.module:Class"`` (``encode_audio(samples, rate) -> codes``, e.g. a
  CosyVoice-style S3 tokenizer matched to the checkpoint) encodes the row's ``sft_target_audio``; rows without
  reference audio fall back to ``self``.
- ``none``: text-only SFT; the talker stream is not in the target (pair it with ``talker: frozen``).

``talker``: ``frozen`` (default; its parameters never change), ``lora`` (peft adapters on the talker's attention),
or ``full``. The audio and vision towers and token2wav are frozen. The choice is in ``info()`` and so in the run's
config.

Public checkpoints: ``Qwen/Qwen2.5-Omni-3B``, ``Qwen/Qwen2.5-Omni-7B`` (by name from the local Hugging Face cache, or
a folder with the weights, the tokenizer, ``preprocessor_config.json`` and ``spk_dict.pt``). Qwen's model card asks
for its own system prompt when speech output is wanted; it is the default here (``system_prompt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig

from align.adapter import PolicyAdapter
from align.building import CHATML, bpe_tokenizer, first_line, sampling, torch_dtype
from align.interleaved.policy import AUDIO_PLACEHOLDER, flatten_content
from align.policy import PAD_CHANNEL, SPEECH, TEXT, Trajectory, as_audio, flat_stream, load_codec

QWEN_SYSTEM_PROMPT = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
                      "auditory and visual inputs, as well as generating text and speech.")
SAMPLE_RATE = 24_000  # token2wav's output rate
FEATURE_RATE = 16_000  # the audio tower's input rate
SFT_SPEECH = ("self", "encoder", "none")
TALKER_MODES = ("frozen", "lora", "full")


@dataclass
class OmniPrompt:
    """A conversation ready for the answer: thinker token ids (audio placeholders expanded) and each audio's
    Whisper features ([mel bins, frames], valid frames only), in the order of the placeholders."""

    input_ids: list[int]
    features: list[np.ndarray] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.input_ids)


class OmniPolicy:
    """`PolicyAdapter` for a Qwen2.5-Omni model (thinker + talker + token2wav).

    Args:
        model: a `Qwen2_5OmniForConditionalGeneration` with its talker enabled.
        tokenizer: the thinker's tokenizer with its chat template.
        feature_extractor: the processor's `WhisperFeatureExtractor` (16 kHz, 128 mel bins).
        speaker: a speaker entry (``bos_token``, ``cond``, ``ref_mel``), as in ``spk_dict.pt``.
        speaker_name: its name, for info().
        sft_speech, speech_encoder: how reference speech becomes talker codes (see the module docstring).
        talker_max_new_tokens: codes per answer at most (default: 4 per text token, generate's 4096/1024).
        system_prompt: prepended to conversations without a system turn (None: none).
        token2wav_steps: ODE steps of the DiT (generate's default 10).
        decode_seed: token2wav starts from noise; a fixed seed makes decoding a function of the codes.
    """

    family = "omni"
    hears_audio = True

    @property
    def targets_from_model(self) -> bool:
        """The speech SFT targets are the talker's own codes: the loop builds them all from the starting model."""
        return self.sft_speech in ("self", "encoder")

    def __init__(self, model: Any, tokenizer: Any, feature_extractor: Any, speaker: dict[str, Any], *,
                 speaker_name: str = "speaker", sft_speech: str = "self", speech_encoder: Any = None,
                 talker_max_new_tokens: int | None = None, system_prompt: str | None = QWEN_SYSTEM_PROMPT,
                 token2wav_steps: int = 10, decode_seed: int = 0, talker_mode: str = "frozen"):
        if sft_speech not in SFT_SPEECH:
            raise ValueError(f"sft_speech must be one of {SFT_SPEECH}, got {sft_speech!r}")
        if sft_speech == "encoder" and speech_encoder is None:
            raise ValueError("sft_speech='encoder' needs speech_encoder='package.module:Class'")
        if not getattr(model, "has_talker", False):
            raise ValueError("this Qwen2.5-Omni model has no talker (enable_audio_output is off)")
        self.model = model
        self.tokenizer = tokenizer
        self.feature_extractor = feature_extractor
        self.speaker, self.speaker_name = speaker, speaker_name
        self.sft_speech, self.speech_encoder = sft_speech, speech_encoder
        self.talker_max_new_tokens = talker_max_new_tokens
        self.system_prompt = system_prompt
        self.token2wav_steps, self.decode_seed, self.talker_mode = int(token2wav_steps), int(decode_seed), talker_mode
        thinker_config = model.config.thinker_config
        talker_config = model.config.talker_config
        self.audio_token = int(thinker_config.audio_token_index)
        self.audio_bos = int(thinker_config.audio_start_token_id)
        self.audio_eos = int(thinker_config.audio_end_token_id)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token (Qwen2.5-Omni's is <|im_end|>)")
        self.eos_id = int(tokenizer.eos_token_id)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.codec_bos, self.codec_pad = talker_config.tts_codec_start_token_id, talker_config.tts_codec_pad_token_id
        self.codec_ends = (talker_config.tts_codec_end_token_id, talker_config.tts_codec_pad_token_id)
        self.text_eos, self.text_pad = talker_config.tts_text_end_token_id, talker_config.tts_text_pad_token_id
        self.n_codes = int(talker_config.vocab_size)

    # -- prompts ---------------------------------------------------------------------------------------------
    def build_prompt(self, messages: list[dict], audios: list | None = None) -> OmniPrompt:
        """The chat template over ``messages``; each ``<audio>`` becomes ``<|audio_bos|><|AUDIO|>×n<|audio_eos|>``
        with n the audio tower's output length for that audio (as the processor expands it)."""
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError("the tokenizer has no chat template")
        messages = [{**m, "content": flatten_content(m.get("content"))} for m in messages]
        if self.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        rendered = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        pieces = rendered.split(AUDIO_PLACEHOLDER)
        audios = list(audios or [])
        if len(pieces) - 1 != len(audios):
            raise ValueError(f"{len(pieces) - 1} {AUDIO_PLACEHOLDER} placeholders in the messages, "
                             f"{len(audios)} audios")
        ids, features = self._encode(pieces[0]), []
        for piece, audio in zip(pieces[1:], audios):
            feats = self.features(audio)
            features.append(feats)
            ids += [self.audio_bos, *[self.audio_token] * _audio_tokens(feats.shape[-1]), self.audio_eos]
            ids += self._encode(piece)
        return OmniPrompt(ids, features)

    def features(self, audio: Any) -> np.ndarray:
        """Whisper features of one audio ([mel bins, valid frames]), as the Qwen2.5-Omni processor computes them."""
        from rewards.audio import at_rate

        samples, rate = as_audio(audio)
        if samples.size == 0:
            raise ValueError("an empty audio turn")
        samples = at_rate(samples, rate, FEATURE_RATE)
        out = self.feature_extractor(samples, sampling_rate=FEATURE_RATE, return_attention_mask=True,
                                     return_tensors="np")
        valid = int(out["attention_mask"][0].sum())
        return np.asarray(out["input_features"][0, :, :valid], dtype=np.float32)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _audio_inputs(self, prompts: Sequence[OmniPrompt], device: torch.device) -> dict[str, torch.Tensor]:
        """input_features [n, mel, frames] + feature_attention_mask [n, frames] of every audio, in row order."""
        feats = [f for p in prompts for f in p.features]
        if not feats:
            return {}
        width = max(f.shape[-1] for f in feats)
        x = torch.zeros((len(feats), feats[0].shape[0], width), dtype=torch.float32)
        mask = torch.zeros((len(feats), width), dtype=torch.long)
        for i, f in enumerate(feats):
            x[i, :, : f.shape[-1]] = torch.from_numpy(f)
            mask[i, : f.shape[-1]] = 1
        dtype = next(self.model.thinker.model.audio_tower.parameters()).dtype
        return {"input_features": x.to(device, dtype), "feature_attention_mask": mask.to(device)}

    # -- sampling --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[OmniPrompt], n: int, *, temperature: float = 0.7, top_p: float = 0.9,
                 max_new_tokens: int = 256, seed: int | None = None, batch_size: int | None = None
                 ) -> list[list[Trajectory]]:
        """``n`` rollouts per prompt: the thinker samples the text, then the talker samples codes for it.

        Both channels use ``temperature``/``top_p`` (0: greedy); the talker never samples its codec BOS (as
        generate's ``suppress_tokens``). With ``seed`` the draw is reproducible and the global RNG is left as it was.
        """
        rows = [p for p in prompts for _ in range(n)]
        device = _device(self.model)
        trajs: list[Trajectory] = []
        with sampling(self.model, seed):
            step = batch_size or len(rows) or 1
            for start in range(0, len(rows), step):
                chunk = rows[start : start + step]
                texts = self._generate_text(chunk, temperature, top_p, max_new_tokens, device)
                limit = self.talker_max_new_tokens or 4 * max_new_tokens
                codes = self._generate_codes(chunk, texts, temperature, top_p, limit)
                trajs += [self.trajectory(p, t, c) for p, t, c in zip(chunk, texts, codes)]
        return [trajs[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _generate_text(self, rows: list[OmniPrompt], temperature: float, top_p: float, max_new_tokens: int,
                       device: torch.device) -> list[list[int]]:
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding
            input_ids[i, width - len(r) :] = torch.tensor(r.input_ids)
            attention[i, width - len(r) :] = 1
        config = _sampling_config(temperature, top_p, max_new_tokens, self.eos_id, self.pad_id)
        out = self.model.thinker.generate(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                                          generation_config=config, **self._audio_inputs(rows, device))
        texts = []
        for row in out[:, width:].tolist():
            end = row.index(self.eos_id) + 1 if self.eos_id in row else len(row)
            texts.append(row[:end] or [self.eos_id])
        return texts

    def _generate_codes(self, rows: list[OmniPrompt], texts: list[list[int]], temperature: float, top_p: float,
                        limit: int) -> list[list[int]]:
        """Sample talker codes for each row's text, one position at a time with a KV cache, left-padded."""
        from transformers import DynamicCache

        talker = self.model.talker
        inputs = self._talker_inputs(rows, texts, [[] for _ in rows])
        prefix = [len(x.embeds) for x in inputs]
        width = max(prefix)
        hidden = inputs[0].embeds.shape[-1]
        device = inputs[0].embeds.device
        embeds = torch.zeros((len(rows), width, hidden), dtype=inputs[0].embeds.dtype, device=device)
        positions = torch.zeros((3, len(rows), width), dtype=torch.long, device=device)
        attention = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, x in enumerate(inputs):
            embeds[i, width - prefix[i] :] = x.embeds
            positions[:, i, width - prefix[i] :] = x.positions
            attention[i, width - prefix[i] :] = 1
        cache = DynamicCache(config=talker.config)
        codes: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        step_embeds, step_positions = embeds, positions
        for j in range(limit):
            out = talker(inputs_embeds=step_embeds, position_ids=step_positions, attention_mask=attention,
                         cache=cache, use_cache=True)
            cache = out.cache
            logits = out.logits[:, -1].float()
            logits[:, self.codec_bos] = float("-inf")
            chosen = _sample(logits, temperature, top_p).tolist()
            for i, code in enumerate(chosen):
                if not done[i]:
                    codes[i].append(code)
                    done[i] = code in self.codec_ends
            if all(done) or j == limit - 1:
                break
            nxt = torch.tensor([c[-1] if c else self.codec_pad for c in codes], device=device)
            step = torch.stack([x.step_embed(j) for x in inputs])[:, None]
            step_embeds = talker.get_input_embeddings()(nxt)[:, None] + step
            step_positions = torch.stack([x.step_position(j) for x in inputs], dim=1)[:, :, None]
            attention = torch.cat([attention, attention.new_ones((len(rows), 1))], dim=1)
        return codes

    # -- layout ----------------------------------------------------------------------------------------------
    def trajectory(self, prompt: OmniPrompt, text_ids: Sequence[int], codes: Sequence[int]) -> Trajectory:
        """The two streams of one answer: finished when the text ended with EOS and the talker with an end code."""
        text_ids, codes = [int(t) for t in text_ids], [int(c) for c in codes]
        ids, channels, spans, weights = flat_stream([("text", text_ids, TEXT, 1.0), ("talker", codes, SPEECH, 1.0)])
        spoken = codes[:-1] if codes and codes[-1] in self.codec_ends else codes
        finished = bool(text_ids) and text_ids[-1] == self.eos_id and (not codes or codes[-1] in self.codec_ends)
        return Trajectory(prompt_ids=prompt, completion_ids=ids, channels=channels,
                          text=self.tokenizer.decode(text_ids, skip_special_tokens=True), speech_tokens=spoken,
                          finished=finished, streams=spans, weights=weights)

    def sft_target(self, prompt_ids: OmniPrompt, text: str, speech_tokens: Sequence[int] | None = None, *,
                   audio: Any = None) -> Trajectory:
        """The reference text (+ EOS) and talker codes (+ the codec end code) for it (see ``sft_speech``)."""
        (target,) = self.sft_targets([prompt_ids], [text], [audio], [speech_tokens])
        return target

    def sft_targets(self, prompts: Sequence[OmniPrompt], texts: Sequence[str], audios: Sequence[Any] | None = None,
                    speech_tokens: Sequence[Sequence[int] | None] | None = None, *, batch_size: int = 16
                    ) -> list[Trajectory]:
        """`sft_target` for many answers; the talker's own codes (``self``) are decoded greedily in batches."""
        audios = list(audios or [None] * len(prompts))
        given = list(speech_tokens or [None] * len(prompts))
        text_ids = [[*self._encode(t), self.eos_id] for t in texts]
        codes: list[list[int] | None] = [None] * len(prompts)
        for i, (tokens, audio) in enumerate(zip(given, audios)):
            if tokens is None and self.sft_speech == "encoder" and audio is not None:
                tokens = self.speech_encoder.encode_audio(*as_audio(audio))
            if tokens is not None:
                bad = [c for c in tokens if not 0 <= int(c) < self.n_codes]
                if bad:
                    raise ValueError(f"talker codes out of range 0..{self.n_codes - 1}: {bad[:5]}")
                codes[i] = [*(int(c) for c in tokens), self.codec_ends[0]]
            elif self.sft_speech == "none":
                codes[i] = []
        todo = [i for i, c in enumerate(codes) if c is None]
        if todo:
            with torch.no_grad(), sampling(self.model, None):
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start : start + batch_size]
                    limit = self.talker_max_new_tokens or 4 * max(len(text_ids[i]) for i in chunk) + 16
                    found = self._generate_codes([prompts[i] for i in chunk], [text_ids[i] for i in chunk],
                                                 0.0, 1.0, limit)
                    for i, c in zip(chunk, found):
                        codes[i] = c
        return [self.trajectory(p, t, c) for p, t, c in zip(prompts, text_ids, codes)]

    # -- training --------------------------------------------------------------------------------------------
    def logprobs(self, trajs: Sequence[Trajectory], *, temperature: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced log-probs of both streams: the thinker over prompt + text (one forward, right-padded,
        its hidden states kept), then the talker over the inputs those states make (one forward)."""
        device = _device(self.model)
        prompts = [t.prompt_ids for t in trajs]
        texts = [t.stream("text") for t in trajs]
        codes = [t.stream("talker") for t in trajs]
        text_logp, states = self._thinker_pass(prompts, texts, temperature, device)
        code_logp = self._talker_pass(prompts, texts, codes, temperature, states)
        longest = max(len(t.completion_ids) for t in trajs)
        logp = torch.zeros((len(trajs), longest), dtype=torch.float32, device=device)
        mask = torch.zeros((len(trajs), longest), dtype=torch.bool, device=device)
        channels = torch.full((len(trajs), longest), PAD_CHANNEL, dtype=torch.long, device=device)
        rows = []
        for i, t in enumerate(trajs):
            row = torch.cat([text_logp[i], code_logp[i]])
            rows.append(torch.nn.functional.pad(row, (0, longest - row.shape[0])))
            mask[i, : len(t.completion_ids)] = True
            channels[i, : len(t.completion_ids)] = torch.tensor(t.channels, dtype=torch.long)
        logp = torch.stack(rows).masked_fill(~mask, 0.0)
        return logp, mask, channels

    def _thinker_pass(self, prompts: Sequence[OmniPrompt], texts: Sequence[Sequence[int]], temperature: float,
                      device: torch.device) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
        """Per row: text log-probs [len(text)] and the thinker states the talker reads (``prompt``: [L, H] last
        state + layer-0 embedding, audio positions' embedding zeroed; ``reply``: [len(text), H] the same per text
        token)."""
        lens = [len(p) + len(t) for p, t in zip(prompts, texts)]
        width = max(lens)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, (p, t) in enumerate(zip(prompts, texts)):  # right padding: positions 0.. are real
            input_ids[i, : lens[i]] = torch.tensor([*p.input_ids, *t])
            attention[i, : lens[i]] = 1
        input_ids, attention = input_ids.to(device), attention.to(device)
        out = self.model.thinker(input_ids=input_ids, attention_mask=attention, output_hidden_states=True,
                                 **self._audio_inputs(prompts, device))
        embeds = out.hidden_states[0].masked_fill((input_ids == self.audio_token)[..., None], 0.0)
        talker_in = out.hidden_states[-1] + embeds
        logps, states = [], []
        for i, (p, t) in enumerate(zip(prompts, texts)):
            start = len(p)
            logits = out.logits[i, start - 1 : start - 1 + len(t)].float() / temperature
            target = torch.tensor(t, dtype=torch.long, device=device)
            logps.append(logits.gather(-1, target[:, None]).squeeze(-1) - logits.logsumexp(-1))
            states.append({"prompt": talker_in[i, :start], "reply": talker_in[i, start : start + len(t)]})
        return logps, states

    def _talker_pass(self, prompts, texts, codes, temperature: float, states) -> list[torch.Tensor]:
        talker = self.model.talker
        out: list[torch.Tensor | None] = [None] * len(prompts)
        todo = [i for i, c in enumerate(codes) if c]
        for i, c in enumerate(codes):
            if not c:
                out[i] = states[i]["reply"].new_zeros(0, dtype=torch.float32)
        if not todo:
            return out  # type: ignore[return-value]
        inputs = self._talker_inputs([prompts[i] for i in todo], [texts[i] for i in todo], [codes[i] for i in todo],
                                     [states[i] for i in todo])
        lens = [len(x.embeds) for x in inputs]
        width, hidden = max(lens), inputs[0].embeds.shape[-1]
        device = inputs[0].embeds.device
        embeds = torch.zeros((len(todo), width, hidden), dtype=inputs[0].embeds.dtype, device=device)
        positions = torch.zeros((3, len(todo), width), dtype=torch.long, device=device)
        attention = torch.zeros((len(todo), width), dtype=torch.long, device=device)
        rows = []
        for k, x in enumerate(inputs):  # right padding
            rows.append(torch.nn.functional.pad(x.embeds, (0, 0, 0, width - lens[k])))
            positions[:, k, : lens[k]] = x.positions
            attention[k, : lens[k]] = 1
        embeds = torch.stack(rows)
        logits_all = talker(inputs_embeds=embeds, position_ids=positions, attention_mask=attention).logits
        for k, i in enumerate(todo):
            n, first = len(codes[i]), inputs[k].prefix - 1  # code 0 is predicted at the last prefix position
            logits = logits_all[k, first : first + n].float() / temperature
            logits[:, self.codec_bos] = float("-inf")  # never sampled (generate's suppress_tokens)
            target = torch.tensor(codes[i], dtype=torch.long, device=device)
            out[i] = logits.gather(-1, target[:, None]).squeeze(-1) - logits.logsumexp(-1)
        return out  # type: ignore[return-value]

    def _talker_inputs(self, prompts: Sequence[OmniPrompt], texts: Sequence[Sequence[int]],
                       codes: Sequence[Sequence[int]], states: Sequence[dict] | None = None) -> list[_TalkerInput]:
        """The talker's input sequence per row: the prefix (prompt states, text-BOS, first reply token) and one
        position per code but the last (see the module docstring). ``states`` from `_thinker_pass` (None: computed
        here without gradient, for sampling)."""
        talker = self.model.talker
        if states is None:
            with torch.no_grad():
                _, states = self._thinker_pass(prompts, texts, 1.0, _device(self.model))
        embed_text = self.model.thinker.get_input_embeddings()
        embed_code = talker.get_input_embeddings()
        device = states[0]["prompt"].device
        special = embed_text(torch.tensor([self.speaker["bos_token"], self.text_eos, self.text_pad], device=device))
        bos_text, eos_text, pad_text = special[0], special[1], special[2]
        codec = embed_code(torch.tensor([self.codec_pad, self.codec_bos], device=device))
        out = []
        for prompt, text, code, state in zip(prompts, texts, codes, states):
            reply = state["reply"][: max(len(text) - 1, 1)]  # the last text token is never run through the thinker
            prefix = torch.cat([state["prompt"], (bos_text + codec[0])[None], (reply[0] + codec[1])[None]])
            # what each later step adds to codec_embed(previous code): the next reply state, then EOS, then PAD
            tail = torch.cat([reply[1:], eos_text[None], pad_text[None]])
            steps = [tail[min(j, len(tail) - 1)] for j in range(len(code) - 1)] if len(code) > 1 else []
            if steps:
                previous = embed_code(torch.tensor(code[:-1], dtype=torch.long, device=device))
                seq = torch.cat([prefix, previous + torch.stack(steps)])
            else:
                seq = prefix
            text_ids = torch.tensor([[*prompt.input_ids, self.speaker["bos_token"], text[0]]], device=device)
            seqlens = torch.tensor([f.shape[-1] for f in prompt.features], device=device) if prompt.features else None
            pos, _ = talker.get_rope_index(text_ids, None, None, torch.ones_like(text_ids), False, seqlens, None)
            pos = pos[:, 0]  # [3, prefix]
            start = int(pos.max()) + 1
            later = torch.arange(start, start + max(len(code) - 1, 0), device=device).expand(3, -1)
            out.append(_TalkerInput(seq, torch.cat([pos, later], dim=1), len(prefix), tail, start))
        return out

    # -- speech, info ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode_speech(self, speech_tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """token2wav of the codes (without end codes), 24 kHz; seeded, so the same codes give the same waveform."""
        codes = [int(c) for c in speech_tokens if int(c) not in self.codec_ends]
        if not codes:
            return np.zeros(0, dtype=np.float32), SAMPLE_RATE
        token2wav = self.model.token2wav
        device = next(token2wav.parameters()).device
        with sampling(token2wav, self.decode_seed):
            wav = token2wav(torch.tensor([codes], device=device),
                            conditioning=self.speaker["cond"].to(device).float(),
                            reference_mel=self.speaker["ref_mel"].to(device).float(), num_steps=self.token2wav_steps)
        return wav.reshape(-1).float().cpu().numpy(), SAMPLE_RATE

    def info(self) -> dict[str, Any]:
        config = self.model.config
        return {
            "family": self.family,
            "model_class": type(self.model).__name__,
            "model": getattr(config, "_name_or_path", None),
            "tokenizer": getattr(self.tokenizer, "name_or_path", None),
            "speaker": self.speaker_name,
            "talker": self.talker_mode,
            "sft_speech": self.sft_speech,
            "speech_encoder": self.speech_encoder.info() if self.speech_encoder is not None else None,
            "system_prompt": self.system_prompt,
            "talker_max_new_tokens": self.talker_max_new_tokens,
            "token2wav_steps": self.token2wav_steps,
            "streams": {"text": "thinker tokens + EOS (TEXT)", "talker": "codec codes + end code (SPEECH)"},
            "sample_rate": SAMPLE_RATE,
        }


@dataclass
class _TalkerInput:
    embeds: torch.Tensor  # [prefix + len(codes) - 1, H]: the talker's inputs before its input projection
    positions: torch.Tensor  # [3, same]
    prefix: int
    tail: torch.Tensor  # what step j adds to codec_embed(previous code): tail[min(j, len - 1)]
    next_position: int  # position of the first step after the prefix

    def step_embed(self, j: int) -> torch.Tensor:
        return self.tail[min(j, len(self.tail) - 1)]

    def step_position(self, j: int) -> torch.Tensor:
        return torch.full((3,), self.next_position + j, dtype=torch.long, device=self.tail.device)


def _audio_tokens(frames: int) -> int:
    """The audio tower's output length for ``frames`` feature frames (the processor's placeholder count)."""
    after_conv = (frames - 1) // 2 + 1
    return (after_conv - 2) // 2 + 1


def _sampling_config(temperature: float, top_p: float, max_new_tokens: int, eos_id: int, pad_id: int
                     ) -> GenerationConfig:
    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
        top_p=top_p if temperature > 0 else 1.0, top_k=0, min_p=0.0, typical_p=1.0, repetition_penalty=1.0,
        no_repeat_ngram_size=0, min_new_tokens=0, num_beams=1, eos_token_id=eos_id, pad_token_id=pad_id,
        use_cache=True)


def _sample(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One id per row: argmax at temperature 0, else temperature + nucleus sampling (transformers' top-p rule)."""
    if temperature <= 0:
        return logits.argmax(-1)
    scores = logits / temperature
    if top_p < 1.0:
        sorted_scores, order = scores.sort(descending=False)
        cumulative = sorted_scores.softmax(-1).cumsum(-1)
        drop = cumulative <= 1 - top_p
        drop[..., -1:] = False  # always keep the most likely
        scores = scores.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1).squeeze(-1)


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------------------------
# builders: the public checkpoints, a tiny random model of the real classes, a random model at the real shape
# ---------------------------------------------------------------------------------------------------------------


def build_omni_policy(path: str = "Qwen/Qwen2.5-Omni-3B", *, dtype: str = "auto", device: str = "cpu",
                      talker: str = "frozen", speaker: str | None = None, sft_speech: str = "self",
                      speech_encoder: str | None = None, speech_encoder_args: dict | None = None,
                      talker_max_new_tokens: int | None = None, system_prompt: str | None = "default",
                      token2wav_steps: int = 10, lora: dict | None = None, local_files_only: bool | None = None
                      ) -> OmniPolicy:
    """A Qwen2.5-Omni checkpoint by hub name (from the local cache when offline) or local folder.

    Args:
        path: ``Qwen/Qwen2.5-Omni-3B``, ``Qwen/Qwen2.5-Omni-7B`` or a folder (weights, tokenizer,
            ``preprocessor_config.json``, ``spk_dict.pt``).
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``bfloat16``, ``float16`` or ``float32``; token2wav always
            runs in float32, as transformers requires.
        talker: ``frozen``, ``lora`` (``lora``: peft LoraConfig arguments for the talker, default r=8 on its
            attention projections) or ``full``.
        speaker: an entry of ``spk_dict.pt`` (Qwen ships ``Chelsie`` and ``Ethan``; None: Chelsie, else the first).
        system_prompt: ``default`` = Qwen's own (needed for speech output); None = no system turn.
    """
    from transformers import AutoConfig, AutoTokenizer, Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor

    if talker not in TALKER_MODES:
        raise ValueError(f"talker must be one of {TALKER_MODES}, got {talker!r}")
    offline = _offline() if local_files_only is None else local_files_only
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=offline)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load Qwen2.5-Omni from {path!r}: {first_line(e)} (give a folder with the "
                         "checkpoint, or download it first: huggingface-cli download Qwen/Qwen2.5-Omni-3B)") from None
    if config.model_type != "qwen2_5_omni":
        raise ValueError(f"{path} holds a {config.model_type!r} model, not Qwen2.5-Omni (model_type qwen2_5_omni)")
    weights_dtype = torch_dtype(dtype, device)
    try:
        model = Qwen2_5OmniForConditionalGeneration.from_pretrained(path, dtype=weights_dtype, local_files_only=offline)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        features = WhisperFeatureExtractor.from_pretrained(path, local_files_only=offline)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load Qwen2.5-Omni from {path!r}: {first_line(e)}") from None
    if speaker is None and model.speaker_map:
        speaker = "Chelsie" if "Chelsie" in model.speaker_map else sorted(model.speaker_map)[0]
    if speaker not in model.speaker_map:
        raise ValueError(f"no speaker {speaker!r} in {path}/spk_dict.pt (has {sorted(model.speaker_map)})")
    model.to(device)
    return _policy(model, tokenizer, features, model.speaker_map[speaker], speaker_name=speaker, talker=talker,
                   lora=lora, sft_speech=sft_speech, speech_encoder=speech_encoder,
                   speech_encoder_args=speech_encoder_args, talker_max_new_tokens=talker_max_new_tokens,
                   system_prompt=QWEN_SYSTEM_PROMPT if system_prompt == "default" else system_prompt,
                   token2wav_steps=token2wav_steps)


def _policy(model, tokenizer, features, speaker: dict, *, speaker_name: str, talker: str, lora: dict | None,
            sft_speech: str, speech_encoder: str | None, speech_encoder_args: dict | None, **kwargs) -> OmniPolicy:
    """Freeze what is never trained (towers, token2wav; the talker unless asked), wrap the talker's LoRA."""
    model.requires_grad_(True)
    for part in (model.thinker.model.audio_tower, model.thinker.model.visual, model.token2wav):
        part.requires_grad_(False)
    if talker == "frozen":
        model.talker.requires_grad_(False)
    elif talker == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        settings = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
                    **(lora or {})}
        model.talker.requires_grad_(False)
        inject_adapter_in_model(LoraConfig(**settings), model.talker)  # new adapter weights require grad
    encoder = load_codec(speech_encoder, **(speech_encoder_args or {})) if speech_encoder else None
    return OmniPolicy(model, tokenizer, features, speaker, speaker_name=speaker_name, sft_speech=sft_speech,
                      speech_encoder=encoder, talker_mode=talker, **kwargs)


TINY_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
                "<|IMAGE|>", "<|VIDEO|>", "<|vision_bos|>", "<|vision_eos|>", "<|tts_pad|>", "<|tts_bos|>",
                "<|tts_eos|>"]
N_TINY_CODES = 64  # tiny talker: codes 0..63, then codec pad/bos/eos/mask


def tiny_omni_parts(corpus: Sequence[str] = (), *, seed: int = 0, hidden: int = 32, layers: int = 2,
                    shape: dict[str, dict[str, Any]] | None = None, audible: bool = True
                    ) -> tuple[Any, Any, Any, dict[str, Any]]:
    """(model, tokenizer, feature extractor, speaker) of a tiny random Qwen2.5-Omni: the real classes, < 1 M
    parameters, a byte-level BPE tokenizer trained on ``corpus`` with Qwen's special tokens. ``shape`` overrides
    the sub-configs (keys ``text``, ``audio``, ``vision``, ``talker``, ``dit``, ``bigvgan``), e.g. `OMNI_3B_SHAPE`.
    ``audible``: rescale the random vocoder so its output is heard (`_audible`; a timing benchmark skips it)."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, WhisperFeatureExtractor

    tokenizer = bpe_tokenizer(corpus, TINY_SPECIAL, fallback_corpus=["hello world"], eos_token="<|im_end|>",
                              pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in TINY_SPECIAL}
    heads, head_dim = 2, hidden // 2
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(head_dim)}
    shared = {"audio_token_index": ids["<|AUDIO|>"], "image_token_index": ids["<|IMAGE|>"],
              "video_token_index": ids["<|VIDEO|>"], "audio_start_token_id": ids["<|audio_bos|>"],
              "audio_end_token_id": ids["<|audio_eos|>"], "vision_start_token_id": ids["<|vision_bos|>"],
              "vision_end_token_id": ids["<|vision_eos|>"]}
    thinker = {**shared, "user_token_id": ids["<|im_start|>"],
               "text_config": {"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                               "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 1,
                               "rope_parameters": rope, "max_position_embeddings": 4096,
                               "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]},
               "audio_config": {"num_mel_bins": 128, "encoder_layers": 1, "encoder_attention_heads": 2,
                                "encoder_ffn_dim": 32, "d_model": 16, "output_dim": hidden, "n_window": 50},
               "vision_config": {"depth": 1, "hidden_size": 16, "num_heads": 2, "intermediate_size": 32,
                                 "out_hidden_size": hidden, "fullatt_block_indexes": [0]}}
    talker = {**shared, "vocab_size": N_TINY_CODES + 4, "tts_codec_pad_token_id": N_TINY_CODES,
              "tts_codec_start_token_id": N_TINY_CODES + 1, "tts_codec_end_token_id": N_TINY_CODES + 2,
              "tts_codec_mask_token_id": N_TINY_CODES + 3, "tts_text_pad_token_id": ids["<|tts_pad|>"],
              "tts_text_start_token_id": ids["<|tts_bos|>"], "tts_text_end_token_id": ids["<|tts_eos|>"],
              "embedding_size": hidden, "hidden_size": hidden, "intermediate_size": 2 * hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 1,
              "head_dim": head_dim, "rope_parameters": rope, "max_position_embeddings": 8192}
    dit = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "ff_mult": 2, "emb_dim": 16,
           "head_dim": 16, "num_embeds": N_TINY_CODES + 4, "mel_dim": 80, "enc_emb_dim": 16, "enc_dim": 16,
           "enc_channels": [16, 16, 16, 16, 48], "enc_attention_channels": 8, "enc_se_channels": 8,
           "look_ahead_layers": [1], "look_backward_layers": [0, 1]}
    bigvgan = {"mel_dim": 80, "upsample_initial_channel": 128, "resblock_kernel_sizes": [3],
               "resblock_dilation_sizes": [[1, 3, 5]]}
    parts = {"text": thinker["text_config"], "audio": thinker["audio_config"], "vision": thinker["vision_config"],
             "talker": talker, "dit": dit, "bigvgan": bigvgan}
    for key, extra in (shape or {}).items():
        parts[key].update(extra)
    config = Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker,
                               token2wav_config={"dit_config": dit, "bigvgan_config": bigvgan})
    torch.manual_seed(seed)
    model = Qwen2_5OmniForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    speaker = {"bos_token": ids["<|tts_bos|>"], "cond": torch.randn(1, dit["enc_emb_dim"], generator=generator),
               "ref_mel": torch.randn(1, 30, dit["mel_dim"], generator=generator)}
    model.speaker_map["tiny"] = speaker
    if audible:
        _audible(model, speaker)
    return model, tokenizer, WhisperFeatureExtractor(feature_size=128), speaker


def _audible(model: Any, speaker: dict[str, Any]) -> None:
    """Scale a random BigVGAN's last layer so its output peaks near 0.3 (random init gives ~1e-7: silence, which
    the audio scorers rightly refuse), so smoke runs exercise the rewards that listen."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        wav = model.token2wav(torch.arange(N_TINY_CODES)[None] % N_TINY_CODES, conditioning=speaker["cond"],
                              reference_mel=speaker["ref_mel"], num_steps=4)
        peak = float(wav.abs().max())
        if peak > 0:
            model.token2wav.code2wav_bigvgan_model.conv_post.weight.mul_(0.3 / peak)


def build_tiny_omni_policy(corpus: Sequence[str] = (), *, seed: int = 0, hidden: int = 32, layers: int = 2,
                           talker: str = "full", sft_speech: str = "self", talker_max_new_tokens: int | None = None,
                           system_prompt: str | None = None) -> OmniPolicy:
    """The ``tiny-omni`` policy: a tiny random Qwen2.5-Omni (real classes) for smoke runs of every mode on a CPU."""
    model, tokenizer, features, speaker = tiny_omni_parts(corpus, seed=seed, hidden=hidden, layers=layers)
    return _policy(model, tokenizer, features, speaker, speaker_name="tiny", talker=talker, lora=None,
                   sft_speech=sft_speech, speech_encoder=None, speech_encoder_args=None,
                   talker_max_new_tokens=talker_max_new_tokens, system_prompt=system_prompt, token2wav_steps=4)


def save_tiny_omni(folder: str | Path, corpus: Sequence[str] = (), *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2.5-Omni as a checkpoint folder that `build_omni_policy(path=folder,
    speaker="tiny")` loads (weights, tokenizer, preprocessor_config.json, spk_dict.pt)."""
    folder = Path(folder)
    model, tokenizer, features, speaker = tiny_omni_parts(corpus, seed=seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    features.save_pretrained(str(folder))
    torch.save({"tiny": speaker}, folder / "spk_dict.pt")
    return folder


# Qwen2.5-Omni-3B's shape for the step benchmark. The thinker's text model is the published config (hidden 2048,
# 36 layers, 16 heads, 2 KV heads, 151936 tokens); the audio tower, token2wav and the vision tower are transformers'
# defaults (Qwen's); the talker's size (24 layers of 896, 14 heads, 2 KV heads) is not verified here.
OMNI_3B_SHAPE: dict[str, dict[str, Any]] = {
    "text": {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
             "num_attention_heads": 16, "num_key_value_heads": 2,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]}},
    "audio": {"encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120, "d_model": 1280,
              "output_dim": 2048, "n_window": 100},
    "vision": {"depth": 32, "hidden_size": 1280, "num_heads": 16, "intermediate_size": 3420, "out_hidden_size": 2048,
               "fullatt_block_indexes": [7, 15, 23, 31]},
    "talker": {"embedding_size": 2048, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
               "num_attention_heads": 14, "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 8448,
               "tts_codec_pad_token_id": 8292, "tts_codec_start_token_id": 8293, "tts_codec_end_token_id": 8294,
               "tts_codec_mask_token_id": 8296,
               "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 8, 8]}},
    "dit": {"hidden_size": 1024, "num_hidden_layers": 22, "num_attention_heads": 16, "emb_dim": 512, "head_dim": 64,
            "num_embeds": 8193, "enc_emb_dim": 192, "enc_dim": 128, "enc_channels": [256, 256, 256, 256, 768],
            "enc_attention_channels": 64, "enc_se_channels": 64, "look_ahead_layers": [10],
            "look_backward_layers": [0, 20]},
    "bigvgan": {"upsample_initial_channel": 1536, "resblock_kernel_sizes": [3, 7, 11],
                "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]]},
}
# A reduced shape for CPUs: the same structure, about 8 M parameters.
OMNI_REDUCED_SHAPE: dict[str, dict[str, Any]] = {
    "text": {"vocab_size": 8192, "hidden_size": 256, "intermediate_size": 704, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}},
    "audio": {"output_dim": 256}, "vision": {"out_hidden_size": 256},
    "talker": {"embedding_size": 256, "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
               "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]}},
}


def build_random_omni_policy(shape: str = "reduced", *, dtype: str = "auto", device: str = "cpu",
                             talker: str = "frozen") -> OmniPolicy:
    """Random weights at Qwen2.5-Omni-3B's shape (``real``) or `OMNI_REDUCED_SHAPE`, for the step benchmark."""
    sizes = {"real": OMNI_3B_SHAPE, "reduced": OMNI_REDUCED_SHAPE}
    if shape not in sizes:
        raise ValueError(f"shape must be real or reduced, got {shape!r}")
    model, tokenizer, features, speaker = tiny_omni_parts(["hello world"], shape=sizes[shape], audible=False)
    model.to(device, torch_dtype(dtype, device))
    model.token2wav.float()
    return _policy(model, tokenizer, features, speaker, speaker_name="random", talker=talker, lora=None,
                   sft_speech="self", speech_encoder=None, speech_encoder_args=None, talker_max_new_tokens=None,
                   system_prompt=None, token2wav_steps=10)


class OmniEvalAdapter(PolicyAdapter):
    """``wavalign eval --model qwen2.5-omni --model-arg path=Qwen/Qwen2.5-Omni-7B`` (or a folder; ``dtype``,
    ``device``, ``speaker``...: `build_omni_policy`'s arguments). Spoken questions go in as audio."""

    def __init__(self, path: str = "Qwen/Qwen2.5-Omni-3B", checkpoint: str | None = None, *, name: str | None = None,
                 **kwargs: Any):
        super().__init__("omni", checkpoint, name=name or f"qwen2.5-omni-{Path(path).name}", path=path, **kwargs)


def _mrope_section(head_dim: int) -> list[int]:
    """Split head_dim/2 rotary frequencies over (time, height, width) as Qwen does (16/24/24 of 64)."""
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or \
        os.environ.get("TRANSFORMERS_OFFLINE", "0") not in ("0", "", "false")


__all__ = ["OmniEvalAdapter", "OmniPolicy", "OmniPrompt", "build_omni_policy", "build_random_omni_policy",
           "build_tiny_omni_policy",
           "save_tiny_omni", "tiny_omni_parts"]
