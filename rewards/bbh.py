"""BBH verdicts: the answer to one of VoiceBench's four BBH tasks, in the form of its reference.

``sports_understanding``, ``navigate`` and ``web_of_lies`` are yes/no questions (is the sentence plausible? do you
return to the starting point? does X tell the truth?): an explicit or leading yes/no first, then the task's own
conclusion phrases (plausible, back at the starting point, tells the truth). ``hyperbaton`` is (A)/(B).
"""

from __future__ import annotations

import re

from rewards.extract import BBH_TASKS, Extraction, _clean, _fail, extract_choice, extract_yes_no, options_from

_PLAUSIBLE = re.compile(
    r"\b(?P<neg>not\s+(?:very\s+|entirely\s+|particularly\s+|really\s+|quite\s+|at\s+all\s+|)|n't\s+(?:very\s+|"
    r"entirely\s+|really\s+|)|im|un)?(?P<w>plausible|possible|likely|realistic|believable|reasonable)\b", re.I)
_IMPLAUSIBLE_WORDS = re.compile(r"\b(?:doesn'?t\s+make\s+sense|does\s+not\s+make\s+sense|makes\s+no\s+sense|"
                                r"nonsensical|mismatch|contradiction|incorrect\s+sport)\b", re.I)
_START_POINT = r"(?:start(?:ing)?\s+(?:point|position|place|spot|location)|where\s+(?:you|we|i)\s+(?:started|began)|" \
               r"(?:the|my|your|our)\s+(?:original|initial)\s+(?:position|point|spot|location)|the\s+start|origin)"
_RETURN = re.compile(
    rf"\b(?P<neg>(?:not|n't|never|fail\s+to|fails\s+to)\s+(?:\w+\s+){{0,2}})?(?:return\w*|end\w*\s+up|"
    rf"arriv\w*|get\w*|brings?\s+(?:you|us|me)|lead\w*\s+(?:you|us|me)|are|is|am|be|reach\w*|back)"
    rf"\s+(?:back\s+)?(?:(?:at|to|in)\s+)?{_START_POINT}", re.I)
_TRUTH = re.compile(
    r"\b(?P<neg>does\s+not\s+|doesn'?t\s+|did\s+not\s+|didn'?t\s+|is\s+not\s+|isn'?t\s+|not\s+|cannot\s+be\s+|"
    r"can't\s+be\s+)?(?:tells?|telling|told|speaks?|speaking)\s+the\s+truth\b"
    r"|\b(?P<lie>lies|is\s+lying|tells\s+a\s+lie|is\s+a\s+liar|must\s+be\s+lying|was\s+lying|lied)\b"
    r"|\b(?P<truthful>is\s+(?:being\s+)?truthful|is\s+honest)\b", re.I)


def _last_verdict(pattern: re.Pattern[str], text: str, negative: str) -> str | None:
    """yes / no from the last conclusion a task phrase states (the last one is the conclusion of the reasoning)."""
    verdict = None
    for m in pattern.finditer(text):
        groups = m.groupdict()
        if groups.get("lie"):
            verdict = "no"
        elif groups.get(negative):
            verdict = "no"
        else:
            verdict = "yes"
    return verdict


def extract_bbh(response: str | None, task: str, prompt: str | None = None) -> Extraction:
    """The answer to one of VoiceBench's BBH items, in the form of its reference: ``yes`` / ``no``, or ``(A)`` /
    ``(B)`` for hyperbaton.

    ``task`` names the BBH task (or contains it, like VoiceBench's item ids): ``sports_understanding``,
    ``navigate``, ``web_of_lies`` (yes/no: an explicit or leading yes/no first, then the task's conclusion
    phrase: plausible / back at the starting point / tells the truth) or ``hyperbaton`` (the option letter).
    """
    kind = next((t for t in BBH_TASKS if t in (task or "")), None)
    if kind is None:
        return _fail(f"unknown BBH task {task!r} (known: {', '.join(BBH_TASKS)})")
    if response is None or not response.strip():
        return _fail("empty response")
    if kind == "hyperbaton":
        found = extract_choice(response, options_from(None, prompt) or None, letters="AB")
        if found.ok:
            return Extraction(f"({found.value})", found.method, details=found.details)
        return found
    text = _clean(response)
    explicit = extract_yes_no(text)
    if explicit.ok and explicit.method in ("cue", "leading"):
        return explicit
    if kind == "sports_understanding":
        verdict = _last_verdict(_PLAUSIBLE, text, "neg")
        if verdict is None and _IMPLAUSIBLE_WORDS.search(text):
            verdict = "no"
    elif kind == "navigate":
        verdict = _last_verdict(_RETURN, text, "neg")
    else:
        verdict = _last_verdict(_TRUTH, text, "neg")
    if verdict is not None:
        return Extraction(verdict, "task_phrase")
    if explicit.ok:
        return explicit
    return _fail(explicit.reason or "no answer found")


__all__ = ["extract_bbh"]
