"""Scorer names → lazy ``"module:Class"`` paths, so a backend's heavy imports happen only when it is used.

``build("asr", backend="openai-whisper")`` imports `rewards.asr` and calls ``AsrScorer(backend=...)``. A user's
own scorer is reached the same way by its import path, ``build("mypkg.scorers:MyScorer")``, or registered
under a name with `register`.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

SCORERS: dict[str, str] = {
    "asr": "rewards.asr:AsrScorer",
    "quality": "rewards.quality:QualityScorer",
    "loudness": "rewards.loudness:LoudnessScorer",
    "composite": "rewards.composite:CompositeScorer",
    "judge": "rewards.judge:JudgeScorer",
    "prosody": "rewards.prosody:ProsodyScorer",
    "emotion": "rewards.emotion:EmotionScorer",
    "mcq": "rewards.rules:McqScorer",
    "yesno": "rewards.rules:YesNoScorer",
    "refusal": "rewards.rules:RefusalScorer",
    "bbh": "rewards.rules:BbhScorer",
    "ifeval": "rewards.rules:IfevalScorer",
}


class UnknownScorerError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(name: str, target: str) -> None:
    """Register ``name`` for the scorer class at ``"package.module:Class"``."""
    if ":" not in target:
        raise ValueError(f"expected 'package.module:Class', got {target!r}")
    SCORERS[name] = target


def resolve(name: str) -> type:
    """The scorer class for a registered name or a ``"pkg.mod:Class"`` path."""
    target = SCORERS.get(name)
    if target is None:
        if ":" not in name:
            close = difflib.get_close_matches(name, SCORERS, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UnknownScorerError(
                f"unknown scorer '{name}'{hint} (known: {', '.join(sorted(SCORERS))}; "
                "or give your own as 'package.module:Class')"
            )
        target = name
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UnknownScorerError(f"cannot import '{module_name}' for scorer '{name}': {e}") from e
    try:
        return getattr(module, class_name)
    except AttributeError as e:
        raise UnknownScorerError(f"module '{module_name}' has no class '{class_name}' (scorer '{name}')") from e


def build(name: str, **kwargs: Any):
    """Instantiate a scorer by name (or import path) with its keyword arguments."""
    return resolve(name)(**kwargs)
