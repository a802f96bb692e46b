"""Text normalisation and error rates (WER/CER) for comparing transcripts.

English uses Whisper's English text normaliser (spelling variants, numbers, contractions, filler words), as the
Whisper paper, VoiceBench and URO-Bench do. Other languages use Whisper's basic normaliser (lower case,
punctuation and symbols removed). Languages written without spaces between words (Chinese, Japanese, Thai,
...) are compared by characters: their primary error rate is the CER, and "WER" is reported as that CER.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import jiwer

# Languages compared by characters (no whitespace word boundaries).
CHARACTER_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})


@cache
def _normalizer(language: str):
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    if language == "en":
        return EnglishTextNormalizer()
    return BasicTextNormalizer(remove_diacritics=False, split_letters=False)


def base_language(language: str | None) -> str:
    """``"en-US"`` → ``"en"``; None means English (the packaged default model is English-only)."""
    return (language or "en").replace("_", "-").split("-")[0].lower()


def normalize(text: str, language: str | None = "en") -> str:
    """Normalised text for scoring; for character languages, the characters without spaces."""
    lang = base_language(language)
    out = " ".join(_normalizer(lang)(text).split())
    if lang in CHARACTER_LANGUAGES:
        out = out.replace(" ", "")
    return out


@dataclass(frozen=True)
class ErrorRates:
    """Error rates of a hypothesis against a reference, after normalisation.

    ``primary`` is what a reward should use: the CER for character languages, the WER otherwise.
    """

    wer: float
    cer: float
    primary: float


def error_rates(hypothesis: str, reference: str, language: str | None = "en") -> ErrorRates:
    """WER and CER of ``hypothesis`` against ``reference``.

    Raises:
        ValueError: the reference is empty after normalisation (the rate is undefined, so no number is made up),
            unless the hypothesis is empty too (rates are then 0).
    """
    lang = base_language(language)
    ref = normalize(reference, lang)
    hyp = normalize(hypothesis, lang)
    if not ref:
        if not hyp:
            return ErrorRates(0.0, 0.0, 0.0)
        raise ValueError("the reference text is empty after normalisation, so the error rate is undefined")
    if not hyp:
        return ErrorRates(1.0, 1.0, 1.0)
    cer = jiwer.cer(ref, hyp)
    if lang in CHARACTER_LANGUAGES:
        return ErrorRates(wer=cer, cer=cer, primary=cer)
    wer = jiwer.wer(ref, hyp)
    return ErrorRates(wer=wer, cer=cer, primary=wer)


def error_rate_reward(rate: float) -> float:
    """Map an error rate to a reward in [0, 1]: ``1 - min(rate, 1)`` (perfect = 1; WER ≥ 100% = 0)."""
    return 1.0 - min(max(rate, 0.0), 1.0)
