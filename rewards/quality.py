"""Speech quality: MOS-style predictions from DNSMOS, DistillMOS and UTMOS (all 1–5, higher is better, 16 kHz).

Backends (``backends=("dnsmos", "distillmos")`` by default, both offline):
    dnsmos      DNSMOS P.835 (SIG, BAK, OVRL) and P.808 (Reddy et al., ICASSP 2021/2022), the ONNX models
                shipped in the PyPI package ``speechmos``. Windowing exactly as Microsoft's reference
                ``dnsmos_local.py``: clips shorter than 9.01 s are repeated (doubled) until they reach it, then
                9.01 s windows at 1 s hops are scored and averaged. Like the reference, a window whose
                float-computed end falls one sample short is skipped; that drops every window starting at 7 s or
                later, so the reference DNSMOS of a clip depends on its first 16.01 s only.
                ``dnsmos_windowing="fast"`` scores a subset of those same windows (the first one for short clips,
                windows 9 s apart plus the last one for long clips): close, not identical numbers
                (benchmarks/perf/score_throughput.py reports the agreement).
    distillmos  DistillMOS (Stahl & Gamper, 2025), weights shipped in the PyPI package ``distillmos``. Clips are cut
                into the model's 7.68 s segments exactly as its own forward does; segments of several clips
                share a forward pass on CUDA (on CPU one segment per pass measured fastest).
    utmos       UTMOS22 strong (Saeki et al., 2022), as URO-Bench and VocalBench use it. Its weights are NOT
                bundled and cannot be downloaded offline: pass ``utmos_checkpoint`` (the SpeechMOS release file
                ``utmos22_strong_step7459_v1.pt``) or put that file in the torch hub cache.

``value`` (the reward) is the first backend's headline MOS (OVRL for dnsmos) mapped to [0, 1] by (MOS − 1) / 4.

Short clips: each backend takes what its model takes (`MIN_SAMPLES`). DNSMOS repeats a clip shorter than its window
to fill it and DistillMOS zero-pads it to its segment, as their reference code does, so any non-empty clip gets a
MOS (a 0.31 s "A" too); UTMOS's wav2vec 2.0 front end needs one 25 ms frame (400 samples). A clip below a backend's
minimum is that backend's error on the item, never a number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from rewards.audio import usable_audio
from rewards.base import Sample, Score, ScorerInfo, one_line
from rewards.models import ModelUnavailableError, cached, package_dir, verified_file

SAMPLE_RATE = 16000
BACKENDS = ("dnsmos", "distillmos", "utmos")
# The shortest clip (samples at 16 kHz) each model takes: DNSMOS repeats a short clip to fill its 9.01 s window
# (Microsoft's dnsmos_local.py, speechmos), DistillMOS zero-pads to 7.68 s (its own forward), UTMOS's wav2vec 2.0
# feature encoder has a 400-sample receptive field (rewards/utmos.py refuses less).
MIN_SAMPLES = {"dnsmos": 1, "distillmos": 1, "utmos": 400}
HEADLINE = {"dnsmos": "dnsmos_ovrl", "distillmos": "distillmos", "utmos": "utmos"}
METRICS = {
    "dnsmos": ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"),
    "distillmos": ("distillmos",),
    "utmos": ("utmos",),
}

# ONNX files of speechmos==0.0.1.1 and the weights of distillmos==0.9.1.
_DNSMOS_SHA256 = {
    "dnsmos_models/sig_bak_ovr.onnx": "269fbebdb513aa23cddfbb593542ecc540284a91849ac50516870e1ac78f6edd",
    "dnsmos_models/model_v8.onnx": "9246480c58567bc6affd4200938e77eef49468c8bc7ed3776d109c07456f6e91",
}
_DISTILLMOS_SHA256 = "b18b3ac60227267cfb91e5d00ce22cc7b73716fd92f269484da1446e27031a40"


@dataclass(frozen=True)
class QualityConfig:
    """Settings of the quality scorer (recorded with the results).

    Attributes:
        backends: which predictors to run, in order; the first gives ``value``.
        device: ``cpu`` or ``cuda`` (DistillMOS, UTMOS; DNSMOS runs on onnxruntime's CPU provider).
        dnsmos_windowing: ``reference`` (9.01 s windows at 1 s hops, as Microsoft's script) or ``fast``.
        utmos_checkpoint: path to the UTMOS22 strong checkpoint (file or directory).
        distillmos_batch: DistillMOS segments per forward pass; 0 = 1 on CPU (measured fastest there) and 16 on
            CUDA.
    """

    backends: tuple[str, ...] = ("dnsmos", "distillmos")
    device: str = "cpu"
    dnsmos_windowing: str = "reference"
    utmos_checkpoint: str | None = None
    distillmos_batch: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "backends", tuple(self.backends))
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown or not self.backends:
            raise ValueError(f"quality backends must be among {', '.join(BACKENDS)}, got {list(self.backends)}")
        if self.dnsmos_windowing not in ("reference", "fast"):
            raise ValueError(f"dnsmos_windowing must be 'reference' or 'fast', got {self.dnsmos_windowing!r}")


# -- DNSMOS ------------------------------------------------------------------------------------------------
DNSMOS_WINDOW_SECONDS = 9.01
_DNSMOS_WINDOW = int(DNSMOS_WINDOW_SECONDS * SAMPLE_RATE)
# Polynomials mapping the P.835 model's raw outputs to MOS (Microsoft's dnsmos_local.py, non-personalised).
_P835_POLY = {
    "sig": np.poly1d([-0.08397278, 1.22083953, 0.0052439]),
    "bak": np.poly1d([-0.13166888, 1.60915514, -0.39604546]),
    "ovrl": np.poly1d([-0.06766283, 1.11546468, 0.04602535]),
}


# The P.835 network is STFT -> log power -> four stride-1 3x3 convolutions -> 2x2 max pooling -> a small head.
# Reference windows start 1 s (100 STFT frames) apart, so overlapping windows share STFT frames exactly, and the
# expensive convolutions give the same values on shared frames except within their 4-frame receptive field of a
# window's edge, where the per-window zero padding matters. We run the convolutions once over the union of a
# clip's windows, recompute the 4 edge frames of each window on an 8-frame strip, and run the head per window:
# the reference's numbers (tested against speechmos's implementation) for about a quarter of the work when a clip
# has 7 windows.
_P835_LOGPOW = "mos_estimator_logpow/truediv:0"  # (N, frames, 161) log power spectrum
_P835_POOLED = "mos_estimator_logpow/conv2d_3/Relu:0_pooling0"  # (N, 32, frames / 2, 80) after the first pool
_P835_RAW = "Identity:0"  # (N, 3) raw SIG, BAK, OVRL
_FRAMES_PER_SECOND = 100  # STFT hop of 160 samples at 16 kHz
_WINDOW_FRAMES = 900
_EDGE = 4  # receptive field, in frames, of the four 3x3 convolutions before the pool


def _sub_model(model, inputs: dict[str, int], outputs: dict[str, int]) -> bytes:
    """The part of an ONNX graph between named tensors (name -> rank), with every dimension left free."""
    from onnx import TensorProto, helper

    producer = {out: node for node in model.graph.node for out in node.output}
    needed: set[int] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        node = producer.get(name)
        if name in inputs or node is None or id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(node.input)
    nodes = [n for n in model.graph.node if id(n) in needed]
    used = {name for n in nodes for name in n.input}

    def value_info(name: str, rank: int):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"{name}:{k}" for k in range(rank)])

    graph = helper.make_graph(
        nodes, "part", [value_info(n, r) for n, r in inputs.items()], [value_info(n, r) for n, r in outputs.items()],
        [init for init in model.graph.initializer if init.name in used],
    )
    part = helper.make_model(graph, opset_imports=model.opset_import)
    part.ir_version = model.ir_version
    return part.SerializeToString()


class _Dnsmos:
    def __init__(self) -> None:
        import onnx
        import onnxruntime as ort

        root = package_dir("speechmos", "install it with: pip install speechmos==0.0.1.1")
        paths = {name: verified_file(root / name, digest, "DNSMOS (speechmos)") for name, digest in
                 _DNSMOS_SHA256.items()}
        options = ort.SessionOptions()
        options.log_severity_level = 3

        def session(model) -> ort.InferenceSession:
            return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

        p835_path = paths["dnsmos_models/sig_bak_ovr.onnx"]
        self.p835 = session(str(p835_path))
        p835 = onnx.load(str(p835_path))
        self.p835_front = session(_sub_model(p835, {"input_1": 2}, {_P835_LOGPOW: 3}))
        self.p835_convs = session(_sub_model(p835, {_P835_LOGPOW: 3}, {_P835_POOLED: 4}))
        self.p835_head = session(_sub_model(p835, {_P835_POOLED: 4}, {_P835_RAW: 2}))
        self.p808 = session(str(paths["dnsmos_models/model_v8.onnx"]))

    @staticmethod
    def plan(audio: np.ndarray, fast: bool) -> tuple[np.ndarray, list[int]]:
        """The (repeated) clip and the start second of each 9.01 s window, exactly as Microsoft's reference
        chooses them (or a subset of them when ``fast``)."""
        short = len(audio) < _DNSMOS_WINDOW
        while len(audio) < _DNSMOS_WINDOW:
            audio = np.append(audio, audio)
        n_hops = int(np.floor(len(audio) / SAMPLE_RATE) - DNSMOS_WINDOW_SECONDS) + 1
        # The reference computes each window's end in floating point: for many starts int((s + 9.01) * 16000)
        # rounds down to one sample short, and it then skips that window. We keep exactly the windows it keeps.
        starts = [s for s in range(n_hops)
                  if int((s + DNSMOS_WINDOW_SECONDS) * SAMPLE_RATE) - s * SAMPLE_RATE == _DNSMOS_WINDOW]
        if fast and starts:
            # Short clips: the first window of the repeated clip already holds all of it. Long clips: windows at
            # least 9 s apart (no overlap) plus the last one, so the end is covered.
            picked = [starts[0]]
            if not short:
                for s in starts[1:]:
                    if s - picked[-1] >= 9:
                        picked.append(s)
                if picked[-1] != starts[-1]:
                    picked.append(starts[-1])
            starts = picked
        return audio.astype(np.float32), starts

    @classmethod
    def windows(cls, audio: np.ndarray, fast: bool) -> list[np.ndarray]:
        audio, starts = cls.plan(audio, fast)
        return [audio[s * SAMPLE_RATE : s * SAMPLE_RATE + _DNSMOS_WINDOW] for s in starts]

    @staticmethod
    def _melspec(segment: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(y=segment, sr=SAMPLE_RATE, n_fft=321, hop_length=160, n_mels=120)
        return ((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T

    def _p835_raw(self, segments: np.ndarray, starts: list[int]) -> np.ndarray:
        """Raw (SIG, BAK, OVRL) per window; shared convolutions when the windows are consecutive 1 s hops."""
        n = len(starts)
        if n == 1 or starts != list(range(starts[0], starts[0] + n)):
            return np.concatenate([self.p835.run(None, {"input_1": seg[None]})[0] for seg in segments])
        logpow = self.p835_front.run(None, {"input_1": segments})[0]  # (n, 900, 161)
        hop = _FRAMES_PER_SECOND
        union = np.empty((1, (n - 1) * hop + _WINDOW_FRAMES, logpow.shape[2]), dtype=np.float32)
        for k in range(n):
            union[0, k * hop : k * hop + _WINDOW_FRAMES] = logpow[k]
        pooled = self.p835_convs.run(None, {_P835_LOGPOW: union})[0][0]  # (32, frames / 2, 80)
        strips = np.concatenate([logpow[:, : 2 * _EDGE], logpow[:, -2 * _EDGE :]])
        edges = self.p835_convs.run(None, {_P835_LOGPOW: strips})[0]  # (2n, 32, 4, 80)
        half, edge = hop // 2, _EDGE // 2
        per_window = np.stack([pooled[:, k * half : k * half + _WINDOW_FRAMES // 2] for k in range(n)])
        per_window[:, :, :edge] = edges[:n, :, :edge]
        per_window[:, :, -edge:] = edges[n:, :, -edge:]
        return self.p835_head.run(None, {_P835_POOLED: per_window})[0]

    def __call__(self, audio: np.ndarray, fast: bool) -> dict[str, float]:
        audio, starts = self.plan(audio, fast)
        segments = np.stack([audio[s * SAMPLE_RATE : s * SAMPLE_RATE + _DNSMOS_WINDOW] for s in starts])
        rows = []
        for segment, (sig, bak, ovrl) in zip(segments, self._p835_raw(segments, starts)):
            mel = self._melspec(segment[:-160]).astype(np.float32)[None]
            p808 = self.p808.run(None, {"input_1": mel})[0][0][0]
            rows.append((_P835_POLY["sig"](sig), _P835_POLY["bak"](bak), _P835_POLY["ovrl"](ovrl), p808))
        sig, bak, ovrl, p808 = (float(v) for v in np.mean(np.array(rows, dtype=np.float64), axis=0))
        return {"dnsmos_sig": sig, "dnsmos_bak": bak, "dnsmos_ovrl": ovrl, "dnsmos_p808": p808}


# -- DistillMOS --------------------------------------------------------------------------------------------
class _DistillMos:
    def __init__(self, device: str) -> None:
        import torch
        from distillmos import ConvTransformerSQAModel

        root = package_dir("distillmos", "install it with: pip install distillmos==0.9.1")
        weights = verified_file(root / "weights" / "distill_mos_v7.pt", _DISTILLMOS_SHA256, "DistillMOS")
        model = ConvTransformerSQAModel(load_weights=False, segmenting_in_forward=False)
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
        self.model = model.eval().to(device)
        self.device = device

    @staticmethod
    def segments(audio: np.ndarray) -> np.ndarray:
        """Cut like DistillMOS's own forward: zero-pad to 7.68 s, or crops evenly spread with hops ≤ 1 s."""
        from distillmos.sqa import MAX_HOP_LEN, SEQ_LEN

        over = len(audio) - SEQ_LEN
        if over < 0:
            audio, over = np.pad(audio, (0, -over)), 0
        n_hops = int(np.ceil(over / MAX_HOP_LEN)) + 1
        starts = [int(c * over) for c in np.linspace(0, 1, n_hops)]
        return np.stack([audio[s : s + SEQ_LEN] for s in starts])

    def __call__(self, audios: Sequence[np.ndarray], batch: int) -> list[float]:
        import torch

        segments = [self.segments(a) for a in audios]
        flat = np.concatenate(segments).astype(np.float32)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(flat), batch):
                x = torch.from_numpy(flat[start : start + batch]).to(self.device)
                outputs.append(self.model(x).reshape(-1).cpu().numpy())
        scores = np.concatenate(outputs)
        bounds = np.cumsum([0] + [len(s) for s in segments])
        return [float(np.mean(scores[a:b])) for a, b in zip(bounds[:-1], bounds[1:])]


# -- UTMOS -------------------------------------------------------------------------------------------------
class _Utmos:
    def __init__(self, checkpoint: str | None, device: str) -> None:
        from rewards.utmos import find_checkpoint, load_utmos22_strong

        self.checkpoint = str(find_checkpoint(checkpoint))
        self.model = load_utmos22_strong(self.checkpoint, device=device)
        self.device = device

    def __call__(self, audio: np.ndarray) -> float:
        import torch

        with torch.inference_mode():
            wave = torch.from_numpy(audio.astype(np.float32))[None].to(self.device)
            return float(self.model(wave).reshape(-1)[0])


class QualityScorer:
    """MOS predictions (1–5) from the configured backends; ``value`` = (headline MOS − 1) / 4."""

    name = "quality"
    version = "1"
    higher_is_better = True
    requires = frozenset({"audio"})
    sample_rate = SAMPLE_RATE

    def __init__(self, config: QualityConfig | None = None, **overrides: Any):
        self.config = replace(config or QualityConfig(), **overrides)
        self._models: dict[str, Any] = {}

    @property
    def min_seconds(self) -> float:
        """The shortest clip any configured backend scores (each backend checks its own minimum too)."""
        return min(MIN_SAMPLES[b] for b in self.config.backends) / SAMPLE_RATE

    def prepare(self) -> None:
        """Load every backend now, so a missing model is one clear error before any item is scored."""
        for backend in self.config.backends:
            self._model(backend)

    def _model(self, backend: str):
        if backend not in self._models:
            cfg = self.config
            if backend == "dnsmos":
                self._models[backend] = cached(("dnsmos",), _Dnsmos)
            elif backend == "distillmos":
                self._models[backend] = cached(("distillmos", cfg.device), lambda: _DistillMos(cfg.device))
            else:
                self._models[backend] = cached(
                    ("utmos", cfg.utmos_checkpoint, cfg.device), lambda: _Utmos(cfg.utmos_checkpoint, cfg.device)
                )
        return self._models[backend]

    def _distillmos_batch(self) -> int:
        if self.config.distillmos_batch > 0:
            return self.config.distillmos_batch
        return 16 if self.config.device.startswith("cuda") else 1

    def info(self) -> ScorerInfo:
        settings: dict[str, Any] = asdict(self.config)
        settings["backends"] = list(self.config.backends)
        settings["models"] = {
            "dnsmos": "DNSMOS P.835 sig_bak_ovr.onnx + P.808 model_v8.onnx (speechmos 0.0.1.1)",
            "distillmos": "DistillMOS v7 (distillmos 0.9.1)",
            "utmos": "UTMOS22 strong (" + (
                self._models["utmos"].checkpoint if "utmos" in self._models else str(self.config.utmos_checkpoint)
            ) + ")",
        }
        settings["models"] = {b: settings["models"][b] for b in self.config.backends}
        settings["min_samples"] = {b: MIN_SAMPLES[b] for b in self.config.backends}
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, settings)

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        cfg = self.config
        todo, audios, problems = usable_audio(samples, SAMPLE_RATE, self.min_seconds, self.name)
        results: list[Score | None] = [Score.failed(problems[i]) if i in problems else None
                                       for i in range(len(samples))]
        metrics: list[dict[str, Any]] = [{m: None for b in cfg.backends for m in METRICS[b]} for _ in todo]
        errors: list[list[str]] = [[] for _ in todo]
        for backend in cfg.backends:
            model = self._model(backend)
            fits = []  # the clips long enough for this backend's model
            for k, audio in enumerate(audios):
                if len(audio) >= MIN_SAMPLES[backend]:
                    fits.append(k)
                else:
                    errors[k].append(f"{backend}: too_short: {len(audio)} samples at 16 kHz, shorter than its "
                                     f"minimum {MIN_SAMPLES[backend]}")
            if backend == "distillmos":
                if not fits:
                    continue
                try:
                    for k, value in zip(fits, model([audios[k] for k in fits], self._distillmos_batch())):
                        metrics[k]["distillmos"] = value
                except RuntimeError:
                    # One bad item must not sink the batch: retry one by one to find it.
                    for k in fits:
                        try:
                            metrics[k]["distillmos"] = model([audios[k]], self._distillmos_batch())[0]
                        except RuntimeError as e:
                            errors[k].append(f"distillmos: {one_line(e)}")
                continue
            for k in fits:
                audio = audios[k]
                try:
                    if backend == "dnsmos":
                        metrics[k].update(model(audio, cfg.dnsmos_windowing == "fast"))
                    else:
                        metrics[k]["utmos"] = model(audio)
                except Exception as e:  # an inference failure on one item is that item's error
                    errors[k].append(f"{backend}: {one_line(e)}")
        headline = HEADLINE[cfg.backends[0]]
        for k, i in enumerate(todo):
            mos = metrics[k][headline]
            value = None if mos is None else float(np.clip((mos - 1.0) / 4.0, 0.0, 1.0))
            error = "; ".join(errors[k]) or None
            if value is None and error is None:
                error = f"{headline} could not be computed"
            results[i] = Score(value=value, metrics=metrics[k], error=error)
        return results  # type: ignore[return-value]


__all__ = ["QualityScorer", "QualityConfig", "ModelUnavailableError"]
