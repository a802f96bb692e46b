"""UTMOS22 "strong learner": a predicted naturalness MOS for 16 kHz speech.

The model is the strong learner of Saeki et al., "UTMOS: UTokyo-SaruLab System for VoiceMOS Challenge 2022"
(Interspeech 2022, https://arxiv.org/abs/2204.02152), in the inference-only form published by
tarepan/SpeechMOS (``torch.hub.load("tarepan/SpeechMOS:v1.2.0", "utmos22_strong")``): a wav2vec 2.0 Base
encoder, fixed data-domain and judge-id embeddings, a BLSTM, a two-layer projection to a per-frame score,
and the frame mean rescaled to the MOS scale. The phoneme encoder of the paper is not part of it.

Scores are roughly on the 1-5 MOS scale (higher is more natural); they are not clipped, so slightly outside
values are possible. Input is mono audio at 16 kHz (``SAMPLE_RATE``), shape ``(batch, samples)``.

The weights are NOT bundled with wavalign and cannot be downloaded by it (it runs offline): the user provides
``utmos22_strong_step7459_v1.pt`` (the SpeechMOS GitHub release asset that torch.hub fetches) either with
``--utmos-checkpoint PATH`` or by putting it in the torch hub cache (see `find_checkpoint`).

This file is our own implementation; only the parameter names and shapes follow SpeechMOS so that its state
dict loads with ``strict=True``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rewards.models import ModelUnavailableError

SAMPLE_RATE = 16000
CHECKPOINT_NAME = "utmos22_strong_step7459_v1.pt"
# The conv feature extractor's receptive field: shorter input yields no frame at all.
MIN_SAMPLES = 400
CHECKPOINT_URL = f"https://github.com/tarepan/SpeechMOS/releases/download/v1.0.0/{CHECKPOINT_NAME}"

# wav2vec 2.0 Base hyper-parameters (fairseq "wav2vec2_base" config; the checkpoint's shapes fix them).
_CONV_LAYERS: tuple[tuple[int, int, int], ...] = ((512, 10, 5),) + ((512, 3, 2),) * 4 + ((512, 2, 2),) * 2
_CONV_DIM = 512
_EMBED_DIM = 768
_FFN_DIM = 3072
_HEADS = 12
_LAYERS = 12
_POS_CONV_KERNEL = 128
_POS_CONV_GROUPS = 16
# UTMOS head sizes.
_DOMAIN_DIM = 128
_JUDGE_DIM = 128
_RNN_HIDDEN = 512
_PROJ_HIDDEN = 2048


class _ConvBlock(nn.Sequential):
    """Conv1d (no bias) -> Dropout(0) -> [GroupNorm] -> GELU.

    A Sequential, and with the (parameter-free) dropout kept at index 1, so that the keys are
    ``conv_layers.{i}.0.weight`` and, for the first block, ``conv_layers.0.2.{weight,bias}`` as in fairseq.
    """

    def __init__(self, n_in: int, n_out: int, kernel: int, stride: int, group_norm: bool) -> None:
        layers: list[nn.Module] = [nn.Conv1d(n_in, n_out, kernel, stride=stride, bias=False), nn.Dropout(0.0)]
        if group_norm:
            # fairseq's "default" extractor mode: one GroupNorm with a group per channel, first layer only.
            layers.append(nn.GroupNorm(n_out, n_out, affine=True))
        layers.append(nn.GELU())
        super().__init__(*layers)


class _FeatureExtractor(nn.Module):
    """Waveform -> 50 Hz frames: seven strided convolutions, (B, T) -> (B, 512, frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList()
        in_dim = 1
        for i, (dim, kernel, stride) in enumerate(_CONV_LAYERS):
            self.conv_layers.append(_ConvBlock(in_dim, dim, kernel, stride, group_norm=i == 0))
            in_dim = dim

    def forward(self, wave: Tensor) -> Tensor:
        x = wave.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x


class _WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation over dim 2, stored as ``weight_g``/``weight_v``/``bias``.

    Written out instead of using ``torch.nn.utils.weight_norm`` because that API is deprecated, and its
    replacement (parametrizations) renames the keys to ``parametrizations.weight.original0/1``, which would
    no longer match the checkpoint. The computed weight is the same: ``v * g / ||v||`` with the norm taken
    over every dim except 2.
    """

    def __init__(self, channels: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.padding = kernel // 2
        self.groups = groups
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
        self.bias = nn.Parameter(torch.zeros(channels))
        # fairseq's init for the positional conv; g starts at ||v|| as weight_norm would set it.
        nn.init.normal_(self.weight_v, mean=0.0, std=math.sqrt(4.0 / (kernel * channels)))
        with torch.no_grad():
            self.weight_g.copy_(self._v_norm())

    def _v_norm(self) -> Tensor:
        return self.weight_v.norm(p=2, dim=(0, 1), keepdim=True)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (self.weight_g / self._v_norm())
        return F.conv1d(x, weight, self.bias, padding=self.padding, groups=self.groups)


class _DropLastFrame(nn.Module):
    """fairseq's SamePad for an even kernel: padding k//2 on both sides yields one extra frame; drop it."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :-1]


class _SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (fairseq key names)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, frames, dim = x.shape

        def split(t: Tensor) -> Tensor:  # (B, F, D) -> (B, heads, F, D/heads)
            return t.view(batch, frames, self.heads, dim // self.heads).transpose(1, 2)

        # No attention dropout even in train mode: the reference calls attention with training=False.
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(batch, frames, dim))


class _EncoderLayer(nn.Module):
    """Post-LN transformer layer (wav2vec 2.0 Base has ``layer_norm_first=False``)."""

    def __init__(self, dim: int, ffn_dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = _SelfAttention(dim, heads)
        # Dropouts hold no parameters; they are kept so that train mode behaves like the reference.
        self.dropout1 = nn.Dropout(0.1)
        self.dropout2 = nn.Dropout(0.0)
        self.dropout3 = nn.Dropout(0.1)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.final_layer_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.self_attn_layer_norm(x + self.dropout1(self.self_attn(x)))
        hidden = self.dropout2(F.gelu(self.fc1(x)))
        return self.final_layer_norm(x + self.dropout3(self.fc2(hidden)))


class _TransformerEncoder(nn.Module):
    """Convolutional positional embedding, LayerNorm, then 12 post-LN transformer layers. (B, F, D) -> same.

    The reference pads the frame axis to an even length and masks the pad as an attention key. Every op here
    other than attention acts per frame, and a masked key contributes nothing to the real frames, so the real
    frames' outputs are the same without the pad; we skip it rather than carry a mask.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pos_conv = nn.Sequential(
            _WeightNormConv1d(dim, _POS_CONV_KERNEL, _POS_CONV_GROUPS), _DropLastFrame(), nn.GELU()
        )
        self.layer_norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList([_EncoderLayer(dim, _FFN_DIM, _HEADS) for _ in range(_LAYERS)])

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        x = self.layer_norm(x)
        for layer in self.layers:
            x = layer(x)
        return x


class _Wav2Vec2(nn.Module):
    """wav2vec 2.0 Base as used for inference: features -> LayerNorm -> 512->768 projection -> encoder.

    No waveform normalisation (the Base config has ``normalize=False``) and no input dropout, as in the
    reference forward.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feature_extractor = _FeatureExtractor()
        self.layer_norm = nn.LayerNorm(_CONV_DIM)
        self.post_extract_proj = nn.Linear(_CONV_DIM, _EMBED_DIM)
        self.encoder = _TransformerEncoder(_EMBED_DIM)
        # Unused at inference (pre-training mask embedding) but present in the checkpoint, so it must exist
        # for a strict load.
        self.mask_emb = nn.Parameter(torch.empty(_EMBED_DIM).uniform_())

    def forward(self, wave: Tensor) -> Tensor:
        features = self.feature_extractor(wave).transpose(1, 2)
        features = self.post_extract_proj(self.layer_norm(features))
        return self.encoder(features)


class UTMOS22Strong(nn.Module):
    """UTMOS22 strong learner (Saeki et al. 2022, VoiceMOS Challenge 2022): waveform -> predicted MOS.

    ``forward(wave)`` takes ``(batch, samples)`` float audio at 16 kHz and returns ``(batch,)`` scores on the
    1-5 MOS scale (higher is better; not clipped). The state dict has exactly the keys and shapes of
    SpeechMOS's ``utmos22_strong_step7459_v1.pt``; load the real weights with `load_utmos22_strong` (they are
    not bundled: the user must provide the file). A freshly constructed model is randomly initialised and
    its scores mean nothing.

    ``domain_emb`` and ``judge_emb`` are single (1, 128) rows: the original model's embedding tables
    reduced to the data-domain and judge ids used at inference, so every input is scored as the same
    (fixed) domain and listener.

    Clips in a batch must share a length. Padding a shorter clip changes its score (the padded frames enter
    the BLSTM and the frame mean, as in the reference), so for exact per-clip scores use batch size 1 or
    batch clips of equal length.
    """

    def __init__(self) -> None:
        super().__init__()
        self.wav2vec2 = _Wav2Vec2()
        # Fixed at inference (requires_grad=False in the reference too); random init only so that an
        # unloaded model still gives finite numbers.
        self.domain_emb = nn.Parameter(torch.randn(1, _DOMAIN_DIM), requires_grad=False)
        self.judge_emb = nn.Parameter(torch.randn(1, _JUDGE_DIM), requires_grad=False)
        self.blstm = nn.LSTM(
            input_size=_EMBED_DIM + _DOMAIN_DIM + _JUDGE_DIM,
            hidden_size=_RNN_HIDDEN,
            batch_first=True,
            bidirectional=True,
        )
        self.projection = nn.Sequential(
            nn.Linear(2 * _RNN_HIDDEN, _PROJ_HIDDEN), nn.ReLU(), nn.Linear(_PROJ_HIDDEN, 1)
        )

    def forward(self, wave: Tensor, sr: int = SAMPLE_RATE) -> Tensor:
        """Score ``(batch, samples)`` audio; returns ``(batch,)`` MOS.

        ``sr`` other than 16 kHz is resampled with torchaudio, as the SpeechMOS v1.2.0 reference does
        (wavalign's loaders already deliver 16 kHz, so this is only for direct use).
        """
        if wave.dim() != 2:
            raise ValueError(
                f"UTMOS22Strong expects a (batch, samples) waveform, not shape {tuple(wave.shape)}"
            )
        if sr != SAMPLE_RATE:
            import torchaudio  # only needed here, and torchaudio is not a wavalign dependency

            wave = torchaudio.functional.resample(wave, orig_freq=sr, new_freq=SAMPLE_RATE)
        if wave.shape[1] < MIN_SAMPLES:
            # Checked here because the conv stack would otherwise fail with an opaque size error.
            raise ValueError(f"UTMOS22Strong needs at least {MIN_SAMPLES} samples (25 ms at 16 kHz)")
        units = self.wav2vec2(wave)  # (B, frames, 768)
        batch, frames, _ = units.shape
        domain = self.domain_emb.unsqueeze(1).expand(batch, frames, -1)
        judge = self.judge_emb.unsqueeze(1).expand(batch, frames, -1)
        feats, _ = self.blstm(torch.cat([units, domain, judge], dim=2))
        frame_scores = self.projection(feats).squeeze(2)  # (B, frames)
        # The model was trained on MOS normalised as (mos - 3) / 2; undo it on the utterance mean.
        return frame_scores.mean(dim=1) * 2 + 3


def _missing_message(detail: str) -> str:
    return (
        f"UTMOS22 strong weights not found ({detail}). The UTMOS weights are not bundled with wavalign and "
        "wavalign cannot download them (it works offline). Get the file "
        f"'{CHECKPOINT_NAME}' from the tarepan/SpeechMOS GitHub releases ({CHECKPOINT_URL}; it is what "
        "torch.hub.load('tarepan/SpeechMOS:v1.2.0', 'utmos22_strong') downloads), then either pass "
        f"--utmos-checkpoint PATH (the file, or a directory containing it) or put it in the torch hub cache "
        f"as <torch hub dir>/checkpoints/{CHECKPOINT_NAME}."
    )


def find_checkpoint(path: str | None) -> Path:
    """The UTMOS checkpoint file: ``path`` (a file, or a directory holding `CHECKPOINT_NAME`) or, when
    ``path`` is None, ``torch.hub.get_dir()/checkpoints/CHECKPOINT_NAME`` (where torch.hub caches it).

    Raises:
        ModelUnavailableError: nothing found; the message says where to get the file and how to pass it.
    """
    if path is not None:
        candidate = Path(path).expanduser()
        if candidate.is_dir():
            candidate = candidate / CHECKPOINT_NAME
        if candidate.is_file():
            return candidate
        raise ModelUnavailableError(_missing_message(f"no file at {candidate}"))
    # torch.hub.get_dir() honours TORCH_HOME / XDG_CACHE_HOME and set_dir(), like torch.hub itself.
    cached = Path(torch.hub.get_dir()) / "checkpoints" / CHECKPOINT_NAME
    if cached.is_file():
        return cached
    raise ModelUnavailableError(_missing_message(f"no --utmos-checkpoint given and nothing at {cached}"))


def _load_file(source: Path) -> object:
    # weights_only: a checkpoint is untrusted user input; never unpickle arbitrary objects.
    try:
        # mmap avoids reading the ~400 MB into memory twice (file copy + model); load_state_dict copies it.
        return torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        # Files in the legacy (pre-zipfile) torch.save format cannot be memory-mapped.
        return torch.load(source, map_location="cpu", weights_only=True)


def _extract_state_dict(obj: object, source: Path) -> Mapping[str, Tensor]:
    """Accept a bare state dict or one nested under "state_dict" / "model" (common training wrappers)."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            nested = obj.get(key)
            if isinstance(nested, Mapping):
                obj = nested
                break
        if all(isinstance(v, Tensor) for v in obj.values()):
            return obj
    raise ModelUnavailableError(f"{source} is not a UTMOS22 strong state dict (expected a dict of tensors)")


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_utmos22_strong(path: str | None = None, device: str = "cpu") -> UTMOS22Strong:
    """Build `UTMOS22Strong`, load the user-provided checkpoint strictly, and return it in eval mode.

    Args:
        path: the checkpoint file or a directory containing `CHECKPOINT_NAME`; None looks in the torch hub
            cache (see `find_checkpoint`).
        device: where to put the model.

    Raises:
        ModelUnavailableError: no checkpoint, an unreadable one, or one whose keys/shapes differ from the
            SpeechMOS ``utmos22_strong`` layout (the message names a few offending keys).
    """
    source = find_checkpoint(path)
    try:
        raw = _load_file(source)
    except Exception as error:  # noqa: BLE001 - any load failure means the same thing to the user
        raise ModelUnavailableError(f"cannot read UTMOS checkpoint {source}: {error}") from error
    state_dict = _extract_state_dict(raw, source)

    model = UTMOS22Strong()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        k for k in set(expected) & set(state_dict) if tuple(expected[k].shape) != tuple(state_dict[k].shape)
    )
    if missing or unexpected or mismatched:
        # Checked here (not left to load_state_dict) so the error is short and says which file is wrong.
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) ({_preview(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) ({_preview(unexpected)})")
        if mismatched:
            shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}" for k in mismatched]
            parts.append(f"{len(mismatched)} shape mismatch(es) ({_preview(shapes)})")
        raise ModelUnavailableError(
            f"{source} does not match the UTMOS22 strong layout of SpeechMOS's {CHECKPOINT_NAME}: "
            + "; ".join(parts)
        )
    model.load_state_dict(state_dict, strict=True)
    return model.eval().to(device)
