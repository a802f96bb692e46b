"""UTMOS22 strong: official state-dict layout, strict checkpoint loading, forward shape, offline errors.

The real weights are not available offline, so these tests use random-init models; the key names and shapes
below are transcribed from tarepan/SpeechMOS (speechmos/utmos22/strong/model.py and
speechmos/utmos22/fairseq_alt.py), whose state dict is what ``utmos22_strong_step7459_v1.pt`` holds.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewards.models import ModelUnavailableError
from rewards.utmos import (
    CHECKPOINT_NAME,
    SAMPLE_RATE,
    UTMOS22Strong,
    find_checkpoint,
    load_utmos22_strong,
)

# Representative official keys -> shapes: every kind of module, first and last of repeated ones.
OFFICIAL_KEYS: dict[str, tuple[int, ...]] = {
    # wav2vec 2.0 feature extractor: 7 bias-free convs, GroupNorm (index 2) only in the first block.
    "wav2vec2.feature_extractor.conv_layers.0.0.weight": (512, 1, 10),
    "wav2vec2.feature_extractor.conv_layers.0.2.weight": (512,),
    "wav2vec2.feature_extractor.conv_layers.0.2.bias": (512,),
    "wav2vec2.feature_extractor.conv_layers.1.0.weight": (512, 512, 3),
    "wav2vec2.feature_extractor.conv_layers.2.0.weight": (512, 512, 3),
    "wav2vec2.feature_extractor.conv_layers.3.0.weight": (512, 512, 3),
    "wav2vec2.feature_extractor.conv_layers.4.0.weight": (512, 512, 3),
    "wav2vec2.feature_extractor.conv_layers.5.0.weight": (512, 512, 2),
    "wav2vec2.feature_extractor.conv_layers.6.0.weight": (512, 512, 2),
    # Feature LayerNorm, 512 -> 768 projection, the (unused) mask embedding.
    "wav2vec2.layer_norm.weight": (512,),
    "wav2vec2.layer_norm.bias": (512,),
    "wav2vec2.post_extract_proj.weight": (768, 512),
    "wav2vec2.post_extract_proj.bias": (768,),
    "wav2vec2.mask_emb": (768,),
    # Positional conv, weight-normalised over dim 2 (old-style weight_g / weight_v keys), 16 groups.
    "wav2vec2.encoder.pos_conv.0.weight_g": (1, 1, 128),
    "wav2vec2.encoder.pos_conv.0.weight_v": (768, 48, 128),
    "wav2vec2.encoder.pos_conv.0.bias": (768,),
    "wav2vec2.encoder.layer_norm.weight": (768,),
    "wav2vec2.encoder.layer_norm.bias": (768,),
    # Transformer layers 0 and 11.
    "wav2vec2.encoder.layers.0.self_attn.q_proj.weight": (768, 768),
    "wav2vec2.encoder.layers.0.self_attn.q_proj.bias": (768,),
    "wav2vec2.encoder.layers.0.self_attn.k_proj.weight": (768, 768),
    "wav2vec2.encoder.layers.0.self_attn.k_proj.bias": (768,),
    "wav2vec2.encoder.layers.0.self_attn.v_proj.weight": (768, 768),
    "wav2vec2.encoder.layers.0.self_attn.v_proj.bias": (768,),
    "wav2vec2.encoder.layers.0.self_attn.out_proj.weight": (768, 768),
    "wav2vec2.encoder.layers.0.self_attn.out_proj.bias": (768,),
    "wav2vec2.encoder.layers.0.self_attn_layer_norm.weight": (768,),
    "wav2vec2.encoder.layers.0.self_attn_layer_norm.bias": (768,),
    "wav2vec2.encoder.layers.0.fc1.weight": (3072, 768),
    "wav2vec2.encoder.layers.0.fc1.bias": (3072,),
    "wav2vec2.encoder.layers.0.fc2.weight": (768, 3072),
    "wav2vec2.encoder.layers.0.fc2.bias": (768,),
    "wav2vec2.encoder.layers.0.final_layer_norm.weight": (768,),
    "wav2vec2.encoder.layers.0.final_layer_norm.bias": (768,),
    "wav2vec2.encoder.layers.11.self_attn.q_proj.weight": (768, 768),
    "wav2vec2.encoder.layers.11.self_attn.out_proj.bias": (768,),
    "wav2vec2.encoder.layers.11.fc1.weight": (3072, 768),
    "wav2vec2.encoder.layers.11.fc2.weight": (768, 3072),
    "wav2vec2.encoder.layers.11.final_layer_norm.bias": (768,),
    # Fixed data-domain / judge-id embedding rows.
    "domain_emb": (1, 128),
    "judge_emb": (1, 128),
    # BLSTM over 768 + 128 + 128 = 1024 features, hidden 512, both directions.
    "blstm.weight_ih_l0": (2048, 1024),
    "blstm.weight_hh_l0": (2048, 512),
    "blstm.bias_ih_l0": (2048,),
    "blstm.bias_hh_l0": (2048,),
    "blstm.weight_ih_l0_reverse": (2048, 1024),
    "blstm.weight_hh_l0_reverse": (2048, 512),
    "blstm.bias_ih_l0_reverse": (2048,),
    "blstm.bias_hh_l0_reverse": (2048,),
    # Projection: Linear(1024, 2048) -> ReLU -> Linear(2048, 1).
    "projection.0.weight": (2048, 1024),
    "projection.0.bias": (2048,),
    "projection.2.weight": (1, 2048),
    "projection.2.bias": (1,),
}

# 12 layers x 16 tensors + 9 feature-extractor + 5 (layer_norm, post_extract_proj, mask_emb)
# + 5 (pos_conv, encoder.layer_norm) + 2 embeddings + 8 BLSTM + 4 projection.
OFFICIAL_KEY_COUNT = 12 * 16 + 9 + 5 + 5 + 2 + 8 + 4


@pytest.fixture(scope="module")
def model() -> UTMOS22Strong:
    torch.manual_seed(0)
    return UTMOS22Strong().eval()


def _noise_batch() -> torch.Tensor:
    """1 s and 3 s of noise as one (2, 3 s) batch: the reference takes equal-length rows, so zero-pad."""
    generator = torch.Generator().manual_seed(1)
    short = 0.1 * torch.randn(SAMPLE_RATE, generator=generator)
    long = 0.1 * torch.randn(3 * SAMPLE_RATE, generator=generator)
    return torch.stack([torch.nn.functional.pad(short, (0, long.numel() - short.numel())), long])


def test_state_dict_has_official_layout(model: UTMOS22Strong) -> None:
    state = model.state_dict()
    shapes = {key: tuple(value.shape) for key, value in state.items()}
    missing = [key for key in OFFICIAL_KEYS if key not in shapes]
    assert not missing, f"official keys missing: {missing}"
    wrong = {key: (shapes[key], shape) for key, shape in OFFICIAL_KEYS.items() if shapes[key] != shape}
    assert not wrong, f"shape (ours, official) differs: {wrong}"
    assert len(state) == OFFICIAL_KEY_COUNT
    # The old weight_norm API's names; the parametrizations API would produce "parametrizations.*" keys.
    assert not any("parametrizations" in key for key in state)
    # wav2vec 2.0 Base is ~94.4M parameters; the UTMOS head adds ~8.4M (BLSTM 6.3M, projection 2.1M).
    total = sum(value.numel() for value in state.values())
    assert 102_000_000 < total < 103_500_000, total
    # The embedding rows are frozen in the reference too.
    assert not model.domain_emb.requires_grad and not model.judge_emb.requires_grad


def test_load_round_trip_and_forward(model: UTMOS22Strong, tmp_path: Path) -> None:
    saved = model.state_dict()
    torch.save(saved, tmp_path / CHECKPOINT_NAME)

    loaded = load_utmos22_strong(str(tmp_path))

    assert not loaded.training
    loaded_state = loaded.state_dict()
    assert loaded_state.keys() == saved.keys()
    for key, value in saved.items():
        assert torch.equal(loaded_state[key], value), key

    with torch.inference_mode():
        scores = loaded(_noise_batch())
    assert scores.shape == (2,)
    assert torch.isfinite(scores).all()


def test_wrong_key_fails_clearly(model: UTMOS22Strong, tmp_path: Path) -> None:
    state = dict(model.state_dict())
    state["lstm.weight_ih_l0"] = state.pop("blstm.weight_ih_l0")  # e.g. a checkpoint of another model
    path = tmp_path / "wrong.pt"
    torch.save(state, path)

    with pytest.raises(ModelUnavailableError) as info:
        load_utmos22_strong(str(path))
    message = str(info.value)
    assert "1 missing key(s) (blstm.weight_ih_l0)" in message
    assert "1 unexpected key(s) (lstm.weight_ih_l0)" in message
    assert str(path) in message


@pytest.mark.parametrize(
    ("wrapper", "legacy_format"), [(None, False), ("state_dict", False), ("model", True)]
)
def test_unrelated_file_fails_clearly(tmp_path: Path, wrapper: str | None, legacy_format: bool) -> None:
    # A small wrong dict keeps this fast; that the error lists the layout (not "not a state dict") shows
    # the "state_dict"/"model" wrappers were unwrapped, and the legacy case exercises the non-mmap reload.
    state = {"encoder.weight": torch.zeros(3, 3)}
    path = tmp_path / "other.pt"
    torch.save(
        state if wrapper is None else {wrapper: state}, path, _use_new_zipfile_serialization=not legacy_format
    )
    with pytest.raises(ModelUnavailableError, match=r"225 missing key\(s\)") as info:
        load_utmos22_strong(str(path))
    message = str(info.value)
    assert "1 unexpected key(s) (encoder.weight)" in message
    assert "blstm.bias_hh_l0" in message  # the first few missing keys are named


def test_not_a_checkpoint_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(b"<html>404 Not Found</html>")  # e.g. a failed manual download
    with pytest.raises(ModelUnavailableError, match="cannot read UTMOS checkpoint"):
        load_utmos22_strong(str(tmp_path))


def test_forward_rejects_bad_shapes(model: UTMOS22Strong) -> None:
    with pytest.raises(ValueError, match="batch, samples"):
        model(torch.zeros(SAMPLE_RATE))
    with pytest.raises(ValueError, match="at least 400 samples"):
        model(torch.zeros(1, 399))


def test_find_checkpoint_without_weights_says_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelUnavailableError) as info:
        find_checkpoint(None)
    message = str(info.value)
    assert "--utmos-checkpoint" in message
    assert CHECKPOINT_NAME in message
    assert "SpeechMOS" in message


def test_find_checkpoint_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # find_checkpoint only locates the file, so an empty placeholder is enough here.
    hub_file = tmp_path / "hub" / "checkpoints" / CHECKPOINT_NAME
    hub_file.parent.mkdir(parents=True)
    hub_file.touch()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert find_checkpoint(None) == hub_file

    assert find_checkpoint(str(hub_file)) == hub_file
    assert find_checkpoint(str(hub_file.parent)) == hub_file
    # An explicit path that does not exist is an error, not a silent fall back to the hub cache.
    with pytest.raises(ModelUnavailableError, match="--utmos-checkpoint"):
        find_checkpoint(str(tmp_path / "nowhere"))
