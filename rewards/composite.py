"""One scalar reward per item from several scorers, with the breakdown: the reward the training loop optimises.

A `CompositeScorer` runs named component scorers (each once per batch, shared when two components use the same
scorer with the same arguments), turns each component's number into a comparable value, and combines them.

Per component and item, ``x`` is the raw number: the scorer's ``value`` (``metric: null``) or one of its
``Score.metrics`` (e.g. ``asr``'s ``wer_consistency``, ``quality``'s ``dnsmos_ovrl``). Then

    normalize: unit     c = clip((x − lo) / (hi − lo), 0, 1) with ``range: [lo, hi]``, else c = x, which must
                        already lie in [0, 1] (a value outside is that item's error, never silently clipped);
                        ``invert: true`` (lower is better, e.g. WER) then takes c = 1 − c.
    normalize: zscore   u = the same mapping when a ``range`` is given (its clipping still matters), else x;
                        ``invert: true`` takes 1 − u; then c = (u − mean) / (std + eps) over the items of the batch
                        that share ``sample.meta[group_key]`` (a GRPO group: the rollouts of one prompt) and
                        scored on that component; std is the population std (ddof 0); a group with one scored
                        item gives c = 0. Z-scored composites are only comparable within a group, and the group
                        must arrive in one ``score()`` call (the training loop scores whole groups; ``wavalign
                        score`` batches can split one).

    combine: weighted_mean   composite = Σ wᵢ cᵢ / Σ wᵢ
    combine: product         composite = Π cᵢ^wᵢ       (unit only; weights 1 give e.g. P(target emotion) × (1 − WER))

A failed component (the scorer gave None or raised, the metric is missing, an input the scorer needs is missing,
a value outside [0, 1] without a range, no group id in zscore mode) is None in the breakdown with its reason. If
it is ``required`` the item's composite is None; if optional it is dropped and the sums run over the components
that scored: weighted_mean divides by their weights, product rescales their exponents to keep the total
(wᵢ · Σ_all w / Σ_scored w, i.e. the weighted geometric mean of what scored raised to the full degree). The
weights actually applied (normalised to sum 1 for weighted_mean; the exponents for product) are recorded per item.

Per-item output, ``Score(value, metrics, error)``: ``metrics`` holds ``<name>`` (c, or None) and ``<name>.raw``
(x, or None) for every component, ``weights_used`` ({name: weight} of the components combined; None when the
composite is None) and, in zscore mode, ``group_size`` (the items of the batch in the item's group). ``error``
lists every component failure, ``"<name>: <reason>"``; with a value it names what was dropped.

Configuration in YAML, as the training loop reads it (`CompositeScorer.from_yaml`)::

    components:
      - {scorer: asr, weight: 0.3}                      # asr's value: 1 − min(WER, 1), already in [0, 1]
      - {scorer: quality, metric: dnsmos_ovrl, range: [1, 5], weight: 0.2}
      - {scorer: asr, metric: wer_reference, range: [0, 1], invert: true, weight: 0.5, required: false}
    normalize: unit        # or zscore
    combine: weighted_mean # or product
    group_key: group       # zscore only: which sample.meta field holds the group id

(the two ``asr`` components share one transcription). `genemotion` builds P(target emotion) × (1 − WER).
"""

from __future__ import annotations

import difflib
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from rewards.base import Sample, Score, ScorerInfo, one_line, score_each
from rewards.registry import SCORERS, build

NORMALIZE = ("unit", "zscore")
COMBINE = ("weighted_mean", "product")
# Keys of the composite's own metrics, so no component may be named like them.
RESERVED_NAMES = ("value", "error", "weights_used", "group_size")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class Component:
    """One scorer's number in the composite.

    Attributes:
        scorer: a registry name (``asr``, ``quality``, ``loudness``) or ``"package.module:Class"``.
        kwargs: keyword arguments for the scorer's constructor (``{"backends": ["dnsmos"]}``).
        metric: None = the scorer's ``value``; else a key of its ``Score.metrics`` (``wer_consistency``).
        weight: ≥ 0; the weight in the mean, or the exponent in the product.
        range: ``(lo, hi)``: map the raw number linearly to [0, 1] and clip, e.g. ``(1, 5)`` for a MOS. Needed
            in ``unit`` mode for numbers not already in [0, 1].
        invert: lower is better (WER, CER): take 1 − the mapped value.
        required: a failure makes the item's composite None; an optional component that fails is dropped and
            the remaining weights renormalised.
        name: the column label (``composite.<name>``); default the scorer name, plus ``.<metric>`` if any
            (``asr``, ``asr.wer_consistency``; for ``pkg.mod:Class`` the module's last part).
    """

    scorer: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    metric: str | None = None
    weight: float = 1.0
    range: tuple[float, float] | None = None
    invert: bool = False
    required: bool = True
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scorer, str) or not self.scorer.strip():
            raise ValueError(f"a component's scorer must be a name or 'package.module:Class', got {self.scorer!r}")
        where = f"component {self.name or self.scorer!r}"
        if not isinstance(self.kwargs, Mapping) or not all(isinstance(k, str) for k in self.kwargs):
            raise ValueError(f"{where}: kwargs must be a mapping of argument names to values, got {self.kwargs!r}")
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        if self.metric is not None and (not isinstance(self.metric, str) or not self.metric.strip()):
            raise ValueError(f"{where}: metric must be a metric name or null (the scorer's value), got {self.metric!r}")
        if not _real(self.weight) or not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"{where}: weight must be a finite number ≥ 0, got {self.weight!r}")
        object.__setattr__(self, "weight", float(self.weight))
        if self.range is not None:
            bounds = self.range
            if (isinstance(bounds, (str, bytes)) or not isinstance(bounds, Sequence) or len(bounds) != 2
                    or not all(_real(b) and math.isfinite(b) for b in bounds) or not bounds[0] < bounds[1]):
                raise ValueError(f"{where}: range must be [lo, hi] with finite lo < hi, got {bounds!r}")
            object.__setattr__(self, "range", (float(bounds[0]), float(bounds[1])))
        for flag in ("invert", "required"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{where}: {flag} must be true or false, got {getattr(self, flag)!r}")
        if self.name is None:
            base = self.scorer.partition(":")[0].rsplit(".", 1)[-1] if ":" in self.scorer else self.scorer
            object.__setattr__(self, "name", f"{base}.{self.metric}" if self.metric else base)
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(f"component name must be a non-empty label without surrounding spaces, got {self.name!r}")
        if self.name in RESERVED_NAMES or self.name.endswith(".raw"):
            raise ValueError(f"component name {self.name!r} is reserved (names may not be {', '.join(RESERVED_NAMES)} "
                             "or end in '.raw'); set another name")

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as in a YAML config (``from_dict`` reads it back)."""
        return {
            "scorer": self.scorer,
            "kwargs": dict(self.kwargs),
            "metric": self.metric,
            "weight": self.weight,
            "range": list(self.range) if self.range else None,
            "invert": self.invert,
            "required": self.required,
            "name": self.name,
        }


@dataclass(frozen=True)
class CompositeConfig:
    """How the composite reward is made (recorded with every result).

    Attributes:
        components: the component scorers, at least one, with unique names and weights summing to > 0.
        normalize: ``unit`` (each component mapped to [0, 1]) or ``zscore`` (standardised within a group).
        combine: ``weighted_mean`` (Σ w·c / Σ w) or ``product`` (Π c^w; ``unit`` only).
        group_key: zscore only: the ``sample.meta`` field whose value is the group id (e.g. the prompt id).
        eps: zscore only: added to the group's std, so a group of equal values gives 0 rather than 0/0.
    """

    components: tuple[Component, ...]
    normalize: str = "unit"
    combine: str = "weighted_mean"
    group_key: str = "group"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if isinstance(self.components, (str, bytes, Mapping)) or not isinstance(self.components, Sequence):
            raise ValueError(f"components must be a list of components, got {self.components!r}")
        object.__setattr__(self, "components", tuple(self.components))
        if not self.components:
            raise ValueError("a composite needs at least one component")
        for c in self.components:
            if not isinstance(c, Component):
                raise ValueError(f"components must be Component objects (from_dict reads plain dicts), got {c!r}")
        names = [c.name for c in self.components]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"component names must be unique; repeated: {', '.join(repeated)} (set 'name')")
        if sum(c.weight for c in self.components) <= 0:
            raise ValueError("the component weights sum to 0; give at least one a positive weight")
        if self.normalize not in NORMALIZE:
            raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, got {self.normalize!r}")
        if self.combine not in COMBINE:
            raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {self.combine!r}")
        if self.combine == "product" and self.normalize != "unit":
            raise ValueError("combine 'product' needs normalize 'unit' (a product of z-scores has no meaning)")
        if not isinstance(self.group_key, str) or not self.group_key:
            raise ValueError(f"group_key must be a non-empty meta field name, got {self.group_key!r}")
        if not _real(self.eps) or not math.isfinite(self.eps) or self.eps <= 0:
            raise ValueError(f"eps must be a finite number > 0, got {self.eps!r}")

    @property
    def total_weight(self) -> float:
        return sum(c.weight for c in self.components)

    def to_dict(self) -> dict[str, Any]:
        return {
            "components": [c.to_dict() for c in self.components],
            "normalize": self.normalize,
            "combine": self.combine,
            "group_key": self.group_key,
            "eps": self.eps,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompositeConfig:
        """A config from plain data (parsed YAML/JSON); unknown keys are an error that names the closest key."""
        if not isinstance(data, Mapping):
            raise ValueError(f"composite config: expected a mapping, got {type(data).__name__}")
        _check_keys(data, [f.name for f in fields(cls)], "composite config")
        if "components" not in data:
            raise ValueError("composite config: 'components' is required (a list of {scorer: ..., weight: ...})")
        raw = data["components"]
        if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Sequence):
            raise ValueError(f"composite config: 'components' must be a list, got {type(raw).__name__}")
        components = []
        for k, item in enumerate(raw):
            if isinstance(item, Component):
                components.append(item)
                continue
            where = f"composite config: components[{k}]"
            if not isinstance(item, Mapping):
                raise ValueError(f"{where}: expected a mapping such as {{scorer: asr, weight: 1}}, got {item!r}")
            _check_keys(item, [f.name for f in fields(Component)], where)
            if "scorer" not in item:
                raise ValueError(f"{where}: 'scorer' is required")
            kwargs = dict(item)
            if kwargs.get("kwargs") is None:
                kwargs.pop("kwargs", None)
            if "weight" in kwargs:
                kwargs["weight"] = _yaml_number(kwargs["weight"])
            if isinstance(kwargs.get("range"), list):
                kwargs["range"] = [_yaml_number(b) for b in kwargs["range"]]
            try:
                components.append(Component(**kwargs))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
        top = {**data, "components": tuple(components)}
        if "eps" in top:
            top["eps"] = _yaml_number(top["eps"])
        try:
            return cls(**top)
        except ValueError as e:
            raise ValueError(f"composite config: {e}") from e

    @classmethod
    def from_yaml(cls, path: str | Path) -> CompositeConfig:
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read composite config {path}: {one_line(e)}") from e
        try:
            return cls.from_dict(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e


def _yaml_number(value: Any) -> Any:
    """PyYAML reads ``1e-6`` (no dot) as a string: accept such a number; anything else is left to validation."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(f"{where}: unknown key {key!r}{hint} (allowed: {', '.join(allowed)})")


def genemotion(
    emotion_scorer: str,
    *,
    emotion_metric: str | None = None,
    emotion_kwargs: Mapping[str, Any] | None = None,
    wer_metric: str = "wer_reference",
    asr_scorer: str = "asr",
    asr_kwargs: Mapping[str, Any] | None = None,
) -> CompositeConfig:
    """URO-Bench GenEmotion style reward: P(target emotion) × (1 − min(WER, 1)).

    Args:
        emotion_scorer: a scorer whose ``value`` (or ``emotion_metric``) is the probability, in [0, 1], that the
            speech carries the sample's target emotion (wavalign has no such scorer yet: give your own
            ``"package.module:Class"``).
        emotion_metric: which of its metrics is that probability; None = its value.
        emotion_kwargs: constructor arguments of the emotion scorer.
        wer_metric: the asr metric: ``wer_reference`` (the sentence the model was asked to say, in
            ``sample.reference``) or ``wer_consistency`` (against the model's own text channel).
        asr_scorer, asr_kwargs: the ASR scorer and its arguments.

    Returns:
        A config with both components required, weights 1, ``normalize="unit"``, ``combine="product"``.
    """
    return CompositeConfig(
        components=(
            Component(scorer=emotion_scorer, kwargs=dict(emotion_kwargs or {}), metric=emotion_metric,
                      name="emotion"),
            Component(scorer=asr_scorer, kwargs=dict(asr_kwargs or {}), metric=wer_metric, range=(0.0, 1.0),
                      invert=True, name="wer"),
        ),
        normalize="unit",
        combine="product",
    )


# -- pure functions: one component value, z-scores, the combination ---------------------------------------------
def to_unit(x: float, bounds: tuple[float, float] | None, invert: bool, check: bool = True) -> float:
    """Map a raw number as a component does: linearly from ``bounds`` to [0, 1] with clipping, then 1 − c if
    ``invert``. Without ``bounds`` and with ``check``, ``x`` must already lie in [0, 1] (ValueError if not)."""
    if bounds is not None:
        lo, hi = bounds
        c = min(max((x - lo) / (hi - lo), 0.0), 1.0)
    elif check and not 0.0 <= x <= 1.0:
        raise ValueError(f"value {x:g} is outside [0, 1] and the component has no range to map it")
    else:
        c = x
    return 1.0 - c if invert else c


def zscores(values: Sequence[float], eps: float) -> list[float]:
    """(v − mean) / (std + eps) with the population std; a single value gives 0."""
    if len(values) < 2:
        return [0.0] * len(values)
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return [(v - mean) / (std + eps) for v in values]


def combine(values: Mapping[str, float], weights: Mapping[str, float], how: str,
            total_weight: float | None = None) -> tuple[float, dict[str, float]]:
    """The composite of the components that scored, and the weights applied to them.

    ``weighted_mean``: Σ w c / Σ w (the applied weights sum to 1). ``product``: Π c^w', the exponents w' rescaled
    so they sum to ``total_weight`` (all components' weights; default: the given ones').

    Raises:
        ValueError: the given components' weights sum to 0.
    """
    scored = sum(weights[n] for n in values)
    if scored <= 0:
        raise ValueError("the components that scored all have weight 0")
    if how == "weighted_mean":
        used = {n: weights[n] / scored for n in values}
        return sum(used[n] * c for n, c in values.items()), used
    if how == "product":
        scale = (scored if total_weight is None else total_weight) / scored
        used = {n: weights[n] * scale for n in values}
        return math.prod(c ** used[n] for n, c in values.items()), used
    raise ValueError(f"combine must be one of {', '.join(COMBINE)}, got {how!r}")


# -- the scorer ------------------------------------------------------------------------------------------------
class CompositeScorer:
    """Several scorers combined into one reward per item, with the per-component breakdown (see module doc)."""

    name = "composite"
    version = "1"
    higher_is_better = True

    def __init__(self, config: CompositeConfig | Mapping[str, Any] | None = None, **fields_: Any):
        """``CompositeScorer(config)``, ``CompositeScorer({"components": [...], ...})`` or, as the registry's
        ``build("rewards.composite:CompositeScorer", components=[...], combine="product")`` calls it, by fields."""
        if config is not None and fields_:
            raise ValueError("give a config or its fields, not both")
        if config is None:
            config = fields_
        self.config = config if isinstance(config, CompositeConfig) else CompositeConfig.from_dict(config)
        # Components that use the same scorer with the same arguments share one instance and one run per batch.
        self._keys = [_scorer_key(c) for c in self.config.components]
        self._scorers: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompositeScorer:
        return cls(CompositeConfig.from_dict(data))

    @classmethod
    def from_yaml(cls, path: str | Path) -> CompositeScorer:
        return cls(CompositeConfig.from_yaml(path))

    # -- component scorers -----------------------------------------------------------------------------------
    def _built(self) -> dict[str, Any]:
        """The component scorers, built on first use (constructors are cheap; models load in prepare/score)."""
        if self._scorers is None:
            scorers: dict[str, Any] = {}
            for key, c in zip(self._keys, self.config.components):
                if key not in scorers:
                    scorers[key] = build(c.scorer, **c.kwargs)
            self._scorers = scorers
        return self._scorers

    def component_scorer(self, name: str):
        """The scorer instance behind the component called ``name`` (shared components share one)."""
        for key, c in zip(self._keys, self.config.components):
            if c.name == name:
                return self._built()[key]
        raise KeyError(f"no component named {name!r} (have: {', '.join(c.name for c in self.config.components)})")

    @property
    def requires(self) -> frozenset[str]:
        """Inputs the required components need. An optional component's inputs are not required: an item
        without them is still scored, that component is dropped ("missing input: ...")."""
        scorers = self._built()
        needed: set[str] = set()
        for key, c in zip(self._keys, self.config.components):
            if c.required:
                needed |= set(scorers[key].requires)
        return frozenset(needed)

    @property
    def sample_rate(self) -> int | None:
        """The rate the components that declare one agree on (the runner then loads audio at it), else None."""
        rates = {getattr(s, "sample_rate", None) for s in self._built().values() if "audio" in s.requires}
        rates.discard(None)
        return rates.pop() if len(rates) == 1 else None

    def prepare(self) -> None:
        """Load every component's model now, so a missing model is one clear error before any item is scored."""
        for scorer in self._built().values():
            prepare = getattr(scorer, "prepare", None)
            if prepare is not None:
                prepare()

    def info(self) -> ScorerInfo:
        scorers = self._built()
        settings: dict[str, Any] = self.config.to_dict()
        settings["versions"] = {c.name: scorers[k].version for k, c in zip(self._keys, self.config.components)}
        # Each component's full info, with the model details it resolves on loading.
        settings["components_info"] = {
            c.name: scorers[k].info().as_dict() for k, c in zip(self._keys, self.config.components)
        }
        return ScorerInfo(self.name, self.version, self.higher_is_better, self.requires, settings)

    # -- scoring ---------------------------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample]) -> list[Score]:
        samples = list(samples)
        cfg = self.config
        outputs = {key: score_each(scorer, samples) for key, scorer in self._built().items()}

        n = len(samples)
        raw: dict[str, list[float | None]] = {}
        norm: dict[str, list[float | None]] = {}
        why: dict[str, list[str | None]] = {}
        unit = cfg.normalize == "unit"
        for key, c in zip(self._keys, cfg.components):
            raw[c.name], norm[c.name], why[c.name] = [None] * n, [None] * n, [None] * n
            for i, score in enumerate(outputs[key]):
                x, reason = _raw_number(score, c)
                raw[c.name][i] = x
                if x is None:
                    why[c.name][i] = reason
                    continue
                try:
                    norm[c.name][i] = to_unit(x, c.range, c.invert, check=unit)
                except ValueError as e:
                    why[c.name][i] = str(e)

        group_size: list[int | None] = [None] * n
        if not unit:
            group_size = self._zscore(samples, norm, why)

        results = []
        for i in range(n):
            metrics: dict[str, Any] = {}
            for c in cfg.components:
                metrics[c.name] = norm[c.name][i]
                metrics[f"{c.name}.raw"] = raw[c.name][i]
            failed = [c for c in cfg.components if why[c.name][i] is not None]
            reasons = [f"{c.name}{'' if c.required else ' (optional, dropped)'}: {why[c.name][i]}" for c in failed]
            value, used = None, None
            if any(c.required for c in failed):
                pass
            elif len(failed) == len(cfg.components):
                reasons.append("no component could be scored")
            else:
                scored = {c.name: norm[c.name][i] for c in cfg.components if why[c.name][i] is None}
                try:
                    value, used = combine(scored, {c.name: c.weight for c in cfg.components}, cfg.combine,
                                          cfg.total_weight)
                except ValueError as e:
                    reasons.append(str(e))
                if value is not None and unit:
                    value = min(max(value, 0.0), 1.0)  # only float rounding can leave [0, 1] here
            metrics["weights_used"] = used
            if not unit:
                metrics["group_size"] = group_size[i]
            results.append(Score(value=value, metrics=metrics, error="; ".join(reasons) or None))
        return results

    def _zscore(self, samples: Sequence[Sample], norm: dict[str, list[float | None]],
                why: dict[str, list[str | None]]) -> list[int | None]:
        """Replace each component's values by their z-scores within groups, in place; return each item's group
        size (None without a group id, which fails every component of that item)."""
        key = self.config.group_key
        groups: dict[Any, list[int]] = {}
        group_of: list[Any] = []
        for i, sample in enumerate(samples):
            if sample.meta.get(key) is None:
                group_of.append(None)
                for name in norm:
                    if why[name][i] is None:
                        norm[name][i] = None
                        why[name][i] = f"no group id: sample.meta[{key!r}] is missing (zscore normalises per group)"
                continue
            gid = _hashable(sample.meta[key])
            group_of.append(gid)
            groups.setdefault(gid, []).append(i)
        for name, values in norm.items():
            for members in groups.values():
                scored = [i for i in members if why[name][i] is None]
                for i, z in zip(scored, zscores([values[i] for i in scored], self.config.eps)):
                    values[i] = z
        return [None if g is None else len(groups[g]) for g in group_of]


def _scorer_key(c: Component) -> str:
    target = SCORERS.get(c.scorer, c.scorer)
    return target + " " + json.dumps(c.kwargs, sort_keys=True, default=repr)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
        return value
    except TypeError:
        return json.dumps(value, sort_keys=True, default=repr)


def _raw_number(score: Score, c: Component) -> tuple[float | None, str | None]:
    """The component's raw number from its scorer's Score, or None and why not."""
    if c.metric is None:
        x = score.value
        if x is None:
            return None, score.error or "the scorer gave no value"
    else:
        if c.metric not in score.metrics:
            if score.value is None and score.error:
                return None, score.error
            have = ", ".join(sorted(score.metrics)) or "none"
            return None, f"the scorer has no metric {c.metric!r} (has: {have})"
        x = score.metrics[c.metric]
        if x is None:
            return None, f"{c.metric} is None" + (f" ({score.error})" if score.error else "")
    if not _real(x) or not math.isfinite(x):
        return None, f"{c.metric or 'value'} is not a finite number: {x!r}"
    return float(x), None


__all__ = ["Component", "CompositeConfig", "CompositeScorer", "combine", "genemotion", "to_unit", "zscores"]
