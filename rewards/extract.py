"""Rule-based answer extraction from a model's free-form answer: which option, yes or no, which number, refused.

Spoken-dialogue models answer like people: chatty, hedged, in markdown, or as an ASR transcript without
punctuation (``i'd go with option c``, ``the answer is twelve``). Each extractor reads the answer the response
*commits to* and says how it found it; when there is no single committed answer it returns ``value=None`` with a
reason. Nothing is guessed: VoiceBench picks a random letter when its templates fail, we report the failure.

    extract_choice   the option letter: explicit statements (``The answer is (B)``, ``**C**``, ``I'd go with
                     option d``, ``B) Paris``, ``the second one``) first, then bare capital letters, then the text of
                     an option (needs the options). Letters that are rejected (``not A or C``, ``A is wrong``) do
                     not count; two letters offered together (``B or C``) are a hedge, not an answer; a letter right
                     after a self-correction (``D. Wait, no, I mean B``) replaces the earlier one. When several
                     options' texts are named, a conclusion (``so the only mammal here is the dolphin``) or, given
                     the question, the sentence restating it decides.
    extract_yes_no   yes / no from an explicit answer (``the answer is no``), the opening word (``Nope, ...``),
                     answer phrases (``I don't think so``, ``that's correct``), else the one kind of yes/no word,
                     else a first sentence stating the fact (``Penguins can't fly.``) or, given the question, one
                     restating it (``17 is a prime number.``).
    extract_number   a short numeric answer (``12``, ``twelve``, ``$1,200``), via `rewards.reference_judge`.
    detect_refusal   does the response decline the request? (`rewards.refusal`, re-exported here)
    extract_bbh      VoiceBench's four BBH tasks (`rewards.bbh`, re-exported here).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rewards.reference_judge import extract_number as _judge_extract_number
from rewards.reference_judge import normalise, numbers_match, parse_options, reference_letter, reference_number

LETTERS = "ABCDEFGHIJ"
BBH_TASKS = ("sports_understanding", "hyperbaton", "navigate", "web_of_lies")


@dataclass(frozen=True)
class Extraction:
    """What an extractor read from a response.

    Attributes:
        value: the extracted answer (a letter, ``"yes"``/``"no"``, a float, True/False for refused), or None when
            no single answer could be read.
        method: how it was found (e.g. ``"letter"``, ``"option_text"``, ``"cue"``, ``"declines"``); None on
            failure.
        reason: why nothing was extracted (None on success).
        details: extra evidence (rejected letters, hedged letters, the matched phrase).
    """

    value: Any
    method: str | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.value is not None


def _fail(reason: str, **details: Any) -> Extraction:
    return Extraction(None, None, reason, dict(details))


# -- shared text clean-up -----------------------------------------------------------------------------------------
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})


def _clean(text: str) -> str:
    """Typographic quotes made plain, markdown emphasis and headings dropped (``**C**`` → ``C``), spaces collapsed
    within lines."""
    text = text.translate(_QUOTES)
    text = re.sub(r"[*_`]{1,3}", "", text)
    text = re.sub(r"^\s*#+\s*", "", text, flags=re.MULTILINE)
    text = re.sub(r"\\(?:boxed|text|textbf|mathbf)\{([^{}]*)\}", r"\1", text)  # \boxed{B}
    return "\n".join(" ".join(line.split()) for line in text.splitlines()).strip()


# -- Chinese ------------------------------------------------------------------------------------------------------
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HAS_CJK = re.compile(f"[{_CJK}]")
_CJK_PUNCT = str.maketrans({"\u3002": ". ", "\u3001": ", ", "\u300c": '"', "\u300d": '"', "\u300e": '"',
                            "\u300f": '"', "\u2026": "...", "\uff0c": ", ", "\uff1b": "; ", "\uff01": "! ",
                            "\uff1f": "? ", "\uff1a": ": "})


def _cjk_spaced(text: str) -> str:
    """Full-width forms made plain (``Ｃ`` → ``C``, ``，`` → ``,``, ``。`` → ``.``) and a space between a Chinese
    character and anything else, so that a letter in Chinese text stands alone as it does in English
    (``答案是C，`` → ``答案是 C,``). Text without Chinese characters is returned as it is."""
    if not _HAS_CJK.search(text):
        return text
    text = unicodedata.normalize("NFKC", text.translate(_CJK_PUNCT))
    text = re.sub(rf"(?<=[{_CJK}])(?=[A-Za-z0-9(\[])|(?<=[A-Za-z0-9)\]])(?=[{_CJK}])", " ", text)
    text = re.sub(r"(?<=[?!:;,])(?=[A-Za-z(\[])", " ", text)
    text = re.sub(r"(?<![\w'])([A-J])(?=\()", r"\1 ", text)  # "A（明朝）": the letter, then the option's text
    return re.sub(r"[ \t]+", " ", text)


# Chinese answer phrases rewritten as the English cues the rules below read. Letters stand alone after
# `_cjk_spaced`; the longest phrases come first. A phrase maps to what it does (states the answer, picks,
# rejects, corrects, hedges), never to a letter.
_L = r"(?P<l>[A-J])"
_ZH_CUES: list[tuple[re.Pattern[str], str]] = [(re.compile(p), r) for p, r in [
    (r"(?:都|全都|全部|没有一个)\s*(?:不对|不是|不正确|错)|没有(?:一个)?(?:正确|对)的?(?:答案|选项)?",
     " none of them is right. "),
    (r"(?:正确|最终|最后的?|标准)?\s*答案\s*(?:应该|应当|就|也)?\s*(?:是|为|选|:)", " the answer is "),
    (r"选项", " option "),
    (r"不\s*对\s*[,:]?\s*(?:应该|应当)?\s*(?:是|选)", " wait, no, it's "),
    (r"(?:我|我们)?(?:说错了|搞错了|记错了)|等一下|等等|稍等|更正一下|更正|改选|改成", " wait, "),
    (r"(?:也|还)?(?:可能|也许|或许|大概)\s*(?:是|选)", " maybe "),
    (rf"{_L}\s*(?:的)?[{_CJK}]{{0,4}}?\s*(?:不对|错误|错的|错|不正确|不行|不合适|说反了|不符合)",
     r" \g<l> is wrong "),
    (rf"{_L}\s*(?:的)?[{_CJK}]{{0,4}}?\s*(?:正确的|正确|对的|没错|符合)(?![应于比吗])", r" \g<l> is correct "),
    (r"(?:不是|排除|去掉|而不是)\s*(?=(?:option\s+)?[A-J]\b)", " not "),
    (r"(?:我|我会|我就|我们|那就|就|只能|还是|应该|应当)?\s*(?:选择|选|挑)", " I choose "),
    (r"(?:应该|应当|我觉得|我认为|我想|我猜|肯定|那就|也就|就|对应的)\s*是", " it's "),
    (r"所以|因此|因而|于是", " so "),
    (r"是\s*(?=(?:option\s+)?[A-J]\b)", " it's "),
    (r"或者|还是|或", " or "),
    (r"(?<=[A-J] )\s*(?:和|与|跟|以及)\s*(?=[A-J]\b)", " and "),
]]


def _chinese_cues(text: str) -> str:
    """`_cjk_spaced` text with its Chinese answer phrases rewritten as English cues (see `_ZH_CUES`)."""
    if not _HAS_CJK.search(text):
        return text
    for pattern, replacement in _ZH_CUES:
        text = pattern.sub(replacement, text)
    return re.sub(r"[ \t]+", " ", text)


# a transcript drops apostrophes: "i cant help" is "I can't help"
_APOSTROPHE_FIX = {"cant": "can't", "wont": "won't", "dont": "don't", "im": "i'm", "isnt": "isn't",
                   "shouldnt": "shouldn't", "wouldnt": "wouldn't", "couldnt": "couldn't", "doesnt": "doesn't",
                   "ive": "i've", "ill": "i'll", "itll": "it'll", "thats": "that's", "lets": "let's",
                   "arent": "aren't", "wasnt": "wasn't", "werent": "weren't", "didnt": "didn't", "hasnt": "hasn't",
                   "havent": "haven't", "youre": "you're", "theyre": "they're"}
_APOSTROPHES = re.compile(rf"\b(?:{'|'.join(_APOSTROPHE_FIX)})\b", re.IGNORECASE)
_NEGATION_APOSTROPHES = re.compile(rf"\b(?:{'|'.join(w for w in _APOSTROPHE_FIX if w.endswith('nt'))})\b",
                                   re.IGNORECASE)  # for yes/no, where "ill" and "im" may be words



# -- options ------------------------------------------------------------------------------------------------------
def options_from(choices: Any = None, prompt: str | None = None) -> dict[str, str]:
    """The options of a multiple-choice item as {letter: text}.

    ``choices`` (usually ``Sample.meta["choices"]``) may be a list of option texts (lettered A, B, C...) or a
    mapping letter → text; otherwise the options are parsed from ``prompt`` (``A. text`` / ``(A) text`` /
    ``A) text``, as VoiceBench's openbookqa and mmsu prompts list them). {} when neither gives any.
    """
    if isinstance(choices, Mapping) and choices:
        return {str(k).strip().strip("()").upper(): str(v) for k, v in choices.items()}
    if isinstance(choices, (list, tuple)) and choices:
        return {LETTERS[i]: str(c) for i, c in enumerate(choices[: len(LETTERS)])}
    options = parse_options(prompt)
    if options and "".join(options) != LETTERS[:len(options)]:
        options = _sequential_options(prompt)  # a label-like initial in an option: "C. W. E. B. Du Bois"
    if not options and prompt and _HAS_CJK.search(prompt):  # "下列哪一项是哺乳动物？A. 鲨鱼 B. 海豚 ..."
        options = parse_options(_cjk_spaced(prompt))
    return {k: v.strip().rstrip(",;").strip() for k, v in options.items()}  # "A. x, B. y": the comma is a separator


def _sequential_options(prompt: str) -> dict[str, str]:
    """Options read label after label in order (A, then the next B after it, ...), each label followed by some
    text of its own: "A. Malcolm X, B. ..., C. W. E. B. Du Bois, D. Booker T. Washington" keeps "W. E. B. Du Bois"
    whole, where reading every "X. " as a label would not."""
    starts: list[tuple[str, int, int]] = []
    pos = 0
    for letter in LETTERS:
        label = re.compile(rf"(?:^|(?<=[\s,;]))[(\[]?{letter}[)\].:]\s+")
        found = None
        for m in label.finditer(prompt, pos):
            if not starts or prompt[starts[-1][2]:m.start()].strip(" ,;"):
                found = m
                break
        if found is None:
            break
        starts.append((letter, found.start(), found.end()))
        pos = found.end()
    if len(starts) < 2:
        return {}
    ends = [s[1] for s in starts[1:]] + [len(prompt)]
    return {letter: prompt[b:e].split("\n")[0].strip().rstrip(",;").strip() for (letter, _, b), e in zip(starts, ends)}


# -- multiple choice ----------------------------------------------------------------------------------------------
_CUE_NOUN = r"(?:answer|option|choice|letter|alternative|response)"
# Words that may follow a letter and still leave it a letter ("the answer is A because ..."), as opposed to the
# article ("the answer is a bit tricky").
_CONNECTOR = (r"(?:because|since|as|which|so|and|or|but|for|given|is|was|seems|would|with|here|there|then|too|"
              r"though|then|however|i|it|that|this|in|on|from|option|since|if|not)")
# An ASR transcript may spell a spoken letter as a word: "option see", "choice bee".
_SPOKEN = {"ay": "A", "bee": "B", "be": "B", "see": "C", "sea": "C", "cee": "C", "dee": "D"}
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3,
             "fifth": 4, "5th": 4}
_SPEECH_FILLER = r"(?:(?:um+|uh+|er+|erm|hmm+|like|well|probably|i think|i guess)[,.]?\s+)*"
_CORRECT = (r"(?:correct|right|best|better|true|accurate|valid|proper|appropriate|"
            r"most (?:likely|accurate|appropriate|suitable|plausible))")
_WRONG = (r"(?:not|n't|wrong|incorrect|false|inaccurate|out|unlikely|impossible|invalid|eliminated|ruled out|"
          r"a distractor|a trap|a red herring)")

# Conclusive statements, in the order tried at one position; group "l" is the letter.
_TIER3 = [
    # "the answer is (B)", "correct option: c", "my final answer would be D", "answer - b"
    re.compile(rf"\b(?:final\s+|correct\s+|right\s+|best\s+|my\s+|the\s+)*(?:answer|option|choice|letter)\s*"
               r"(?:here\s+|then\s+|therefore\s+|then\s+)?"
               r"(?:is|would be|will be|should be|must be|has to be|seems to be|appears to be|is probably|"
               r"is likely|is most likely|is definitely|is clearly|=|:|-|would have to be)\s*"
               rf"{_SPEECH_FILLER}(?:option\s+|choice\s+|letter\s+)?[(\[\"']?(?P<l>[A-Ja-j])\b", re.IGNORECASE),
    # "I'd go with d", "I choose (B)", "I'll pick option c", "my pick is C", "I'd say b", "going with answer C"
    re.compile(r"\b(?:go(?:ing)?\s+with|goes\s+with|choose|chose|choosing|pick|picked|picking|select|selected|"
               r"selecting|opt\s+for|opting\s+for|vote\s+for|settle\s+on|stick\s+with|lean(?:ing)?\s+towards?|"
               r"i'?d\s+say|i\s+would\s+say|i\s+say|guess|answer\s+with|my\s+(?:pick|choice|guess|answer)\s+is|"
               r"(?:that|which|this)\s+leaves|leaving(?:\s+only)?|only)\s+"
               rf"(?:the\s+)?(?:{_CUE_NOUN}\s+)?[(\[\"']?(?P<l>[A-Ja-j])\b", re.IGNORECASE),
    # "it's B", "that would be C", "it must be (d)"
    re.compile(r"\b(?:it'?s|it\s+is|it\s+would\s+be|it'?d\s+be|it\s+must\s+be|it\s+has\s+to\s+be|that'?s|that\s+is|"
               rf"that\s+would\s+be|that'?d\s+be|so)\s+(?:definitely\s+|probably\s+|clearly\s+|actually\s+)?"
               rf"(?:{_CUE_NOUN}\s+)?[(\[\"']?(?P<l>[A-Ja-j])\b", re.IGNORECASE),
]
# "B is correct", "option C is the right answer", "(d) is the best choice"
_LETTER_IS_RIGHT = re.compile(
    rf"^[)\].:\"']*\s*(?:-\s*)?(?:is|would be|seems|looks|must be|has to be|appears to be|is clearly|is definitely)\s+"
    rf"(?:the\s+)?(?:{_CORRECT}|(?:one|answer|option|choice)\s+(?:that'?s\s+)?{_CORRECT}|the\s+answer|"
    rf"(?:{_CORRECT}\s+)(?:answer|option|choice|one))\b"
    r"|^[)\].:\"']*\s*(?:is|does)\s*[.!]|^[)\].:\"']*\s*(?:makes\s+(?:the\s+most\s+|more\s+)?sense|fits\s+best|"
    r"works\s+best|wins|is\s+it\b|is\s+the\s+one\b|is\s+what\s+i'?d\s+(?:pick|choose|go\s+with))", re.IGNORECASE)
_LETTER_IS_WRONG = re.compile(
    rf"^[)\].:\"']*\s*(?:(?:and|or|,)\s+[(\[]?[A-J][)\]]?\s*)*(?:is|are|was|were|seems|seem|looks|look|would be|"
    rf"can be|must be|'s|can't be|cannot be|doesn't|does not|isn't|aren't|don't|do not)\s+"
    rf"(?:also\s+|clearly\s+|definitely\s+|both\s+|all\s+|"
    rf"obviously\s+|just\s+|simply\s+)?(?:{_WRONG}|(?:a\s+)?(?:wrong|incorrect|bad)\s+(?:answer|option|choice))",
    re.IGNORECASE)
_NEGATION_BEFORE = re.compile(
    r"(?:\bnot|n't|\bnever|\bno|\brather\s+than|\binstead\s+of|\bexcept(?:\s+for)?|\bother\s+than|\brule\s+out|"
    r"\bruled\s+out|\bruling\s+out|\beliminat\w*|\bexclud\w*|\bneither|\bnor|\bdiscard\w*|\breject\w*|"
    r"\bagainst|\bover|\bbesides|\bunlike)\s+"
    rf"(?:(?:be|the|that|it'?s|it\s+is)\s+)?(?:{_CUE_NOUN}s?\s+)?[(\[\"']*$", re.IGNORECASE)
_HEDGE_BEFORE = re.compile(r"(?:\beither|\bmaybe|\bperhaps|\bpossibly|\bbetween|\bor|\bcould\s+be|\bmight\s+be|"
                           r"\bcould\s+also\s+be|\bmight\s+also\s+be|\balso)\s+"
                           rf"(?:(?:be|the)\s+)?(?:{_CUE_NOUN}s?\s+)?[(\[\"']*$", re.IGNORECASE)
_HEDGE_AFTER = re.compile(r"^[)\].\"']*\s*(?:,\s*)?(?:or|maybe|perhaps|might|could)\b", re.IGNORECASE)
# "A is wrong and so is B": the same verdict passed on
_SAME_VERDICT = re.compile(rf"\b{_WRONG}\b[^;!?]{{0,60}}?\b(?:and\s+)?(?:so|same|neither|nor)\s+"
                           rf"(?:is|does|for|goes\s+for|with)\s+"
                           rf"(?:{_CUE_NOUN}\s+)?[(\[\"']*$", re.IGNORECASE)
# "A is also possible", "it could also be C": an alternative kept open, so no single answer
_ALTERNATIVE_AFTER = re.compile(r"^[)\].\"']*\s*(?:is|could be|might be|would be|seems|are)\s+(?:also\s+)?"
                                r"(?:possible|plausible|a possibility|an option|worth considering|not (?:impossible|"
                                r"out of the question))"
                                r"|^[)\].\"']*\s*(?:is\s+also|could\s+(?:also\s+)?be|might\s+(?:also\s+)?be)\s+"
                                r"(?:correct|right)\b|^[)\].\"']*\s*(?:too|as well)\b", re.IGNORECASE)
_ALTERNATIVE_BEFORE = re.compile(r"\b(?:could|might|may)\s+also\s+be\s+[(\[\"']*$|\bor\s+possibly\s+[(\[\"']*$",
                                 re.IGNORECASE)
_CORRECTION = re.compile(r"\b(?:actually|wait|on second thought|correction|i mean|scratch that|let me reconsider|"
                         r"no,? sorry|rather|i take (?:that|it) back|change my answer|upon reflection|hmm,? no)\b",
                         re.IGNORECASE)
_CORRECTION_RIGHT_BEFORE = re.compile(
    rf"(?:{_CORRECTION.pattern})[\s,.!:-]*(?:no[\s,.!]*)?(?:(?:i\s+mean|it'?s|it\s+is|it\s+should\s+be|make\s+(?:it|that)|"
    rf"the\s+(?:correct\s+|right\s+)?answer\s+is|answer|option|choice)\s*[:,]?\s*)*[(\[\"']*$", re.IGNORECASE)
_NOT_A_LETTER_BEFORE = re.compile(r"\b(?:vitamin|plan|type|grade|class|hepatitis|group|section|part|point|"
                                  r"exhibit|appendix|figure|table|row|column|team|size|blood|category|level|"
                                  r"series|model|unit|chapter|step|phase|stage)\s+$", re.IGNORECASE)
_LABEL_LINE = re.compile(r"^\s*(?:[-•]\s*)?(?:option\s+|choice\s+)?[(\[]?([A-J])[)\].:]\s", re.MULTILINE | re.I)


# what may stand between two letters of one list: "A or C", "B, C and D", "(A) and (C)", "A, or option C"
_LIST_GAP = re.compile(r"[)\]\"']*\s*(?:,\s*|/\s*|&\s*)?(?:(?:or|and|nor)\s+)?(?:(?:option|choice)\s+)?[(\[\"']*|"
                       r"[)\]\"']*\s*,?\s*(?:or|and|nor)?\s*[(\[\"']*", re.IGNORECASE)


@dataclass
class _Mention:
    letter: str
    tier: int  # 3 conclusive statement, 2 named option ("option C", "(C)"), 1 bare capital letter
    start: int
    end: int
    rejected: bool = False
    hedged: bool = False
    corrected: bool = False  # follows a self-correction cue ("actually, it's C")
    alternative: bool = False  # kept open as another possibility ("A is also possible")


# Words that start a sentence or state an answer: a capital letter between one of these and a capitalised word is
# a choice ("Definitely C. The heart ..."), not a middle initial ("Franklin D. Roosevelt").
_NOT_NAME = {"the", "a", "an", "it", "its", "it's", "this", "that", "these", "those", "he", "she", "they", "we", "i",
             "you", "so", "and", "but", "or", "because", "since", "as", "in", "on", "at", "for", "of", "to", "with",
             "if", "when", "then", "yes", "no", "not", "definitely", "probably", "maybe", "perhaps", "clearly",
             "obviously", "surely", "answer", "option", "choice", "letter", "final", "correct", "hmm", "um", "uh",
             "okay", "ok", "well", "also", "only", "just", "here", "there", "which", "what", "who", "my", "your",
             "our", "their", "his", "her", "is", "was", "be", "pick", "choose", "say", "go", "one", "both",
             "neither", "either", "nope", "yep", "yeah", "sure", "right", "wrong", "true", "false", "actually",
             "wait", "sorry", "thanks", "great", "good", "best", "first", "next", "last", "now", "still", "again"}


def _initial(text: str, start: int, end: int) -> bool:
    """Is the capital letter at text[start:end] an initial of a name: "C. S. Lewis", "B. F. Skinner", "Franklin
    D. Roosevelt", "George W. Bush" (a letter and a full stop between a name word and a name word, or before
    another initial)?"""
    after = text[end:end + 40]
    if not after.startswith("."):
        return False
    if re.match(r"\.\s?[A-Z]\.(?:\s|$)", after) or re.search(r"(?:^|\s)[A-Z]\.\s?$", text[max(0, start - 4):start]):
        return True  # one of several initials
    nxt = re.match(r"\.\s([A-Z][a-z]+)", after)
    prev = re.search(r"(?:^|[\s(])([A-Z][a-z]+)\s$", text[max(0, start - 30):start])
    return bool(nxt and prev and nxt.group(1).lower() not in _NOT_NAME and prev.group(1).lower() not in _NOT_NAME)


def _letter_ok(text: str, start: int, end: int, tier: int) -> bool:
    """Is the single character at text[start:end] a letter choice rather than a word (the article "a")?"""
    ch = text[start:end]
    after = text[end:end + 40]
    if _NOT_A_LETTER_BEFORE.search(text[max(0, start - 20):start]):
        return False
    if re.match(r"['\w]", after):
        return False
    if ch.isupper() and _initial(text, start, end):
        return False
    if ch in "Aa" or (ch.islower() and tier < 3):
        # the article, a lower-case pronoun ("i"), or prose: a letter only before punctuation, the end, or a word
        # that cannot follow an article
        return bool(re.match(rf"\s*(?:[)\].,;:!?\"']|$|-\s|\n|(?:{_CONNECTOR})\b)", after, re.IGNORECASE)
                    or ch == "A" and tier >= 2 and re.match(r"\s*\(", after))  # "the answer is A (Ming)"
    return True


def _mentions(text: str, allowed: str) -> list[_Mention]:
    found: dict[tuple[int, int], _Mention] = {}

    def add(letter: str, tier: int, start: int, end: int) -> None:
        letter = letter.upper()
        if letter not in allowed:
            return
        key = (start, end)
        if key not in found or found[key].tier < tier:
            found[key] = _Mention(letter, tier, start, end)

    for pattern in _TIER3:
        for m in pattern.finditer(text):
            if _letter_ok(text, m.start("l"), m.end("l"), 3):
                add(m.group("l"), 3, m.start("l"), m.end("l"))
    # spoken letters in a transcript, only right after a cue noun: "option see", "the answer is bee"
    for m in re.finditer(rf"\b(?:option|choice|letter|answer\s+is)\s+({'|'.join(_SPOKEN)})\b", text, re.I):
        add(_SPOKEN[m.group(1).lower()], 3 if "answer" in m.group(0).lower() else 2, m.start(1), m.end(1))
    # ... or as the last word of a transcript after "so" / "it's" / "that's": "... thats the opportunity cost so bee"
    m = re.search(rf"\b(?:so|it'?s|its|that'?s|thats|is)\s+({'|'.join(_SPOKEN)})\W*$", text, re.I)
    if m:
        add(_SPOKEN[m.group(1).lower()], 3, m.start(1), m.end(1))
    # "option C", "choice (b)", "letter d" (a mention, conclusive only with a verdict after it)
    for m in re.finditer(rf"\b{_CUE_NOUN}\s+[(\[\"']?([A-Ja-j])\b", text, re.IGNORECASE):
        if _letter_ok(text, m.start(1), m.end(1), 3):
            add(m.group(1), 2, m.start(1), m.end(1))
    # "(B)", "[c]"
    for m in re.finditer(r"[(\[]([A-Ja-j])[)\]]", text):
        add(m.group(1), 2, m.start(1), m.end(1))
    # "the second one", "the third option"
    for m in re.finditer(rf"\b(?:the\s+)?({'|'.join(_ORDINALS)})\s+(?:one|option|choice|answer|alternative|sentence)\b"
                         r"(?!\s+(?:out\b|to\s+\w+|who\b|in\s+(?:the|line|history)\b|on\s+the\b|of\s+(?:the|his|her|them)\b))",
                         text, re.IGNORECASE):
        idx = _ORDINALS[m.group(1).lower()]
        if idx < len(allowed):
            add(allowed[idx], 2, m.start(1), m.end(1))
    for m in re.finditer(r"\bthe\s+last\s+(?:one|option|choice)\b", text, re.IGNORECASE):
        add(allowed[-1], 2, m.start(), m.end())
    # a response that opens with a label: "B) Paris", "C. The heart", "D: ...", "A" alone
    m = re.match(r"^\s*(?:[-•]\s*)?[(\[\"']?([A-Ja-j])(?:[)\].:,]|\s*$|\s+-\s)", text)
    if m and (m.group(1).isupper() or re.match(r"^\s*[(\[\"']?[a-j](?:[)\]]|\s*$)", text)):
        add(m.group(1), 3, m.start(1), m.end(1))
    # bare capital letters
    for m in re.finditer(r"(?<![\w'])([A-J])(?![\w'])(?!\s*(?:\+\+|#|plus\s+plus|sharp\b))"
                         r"(?<!\bthe\s[A-J])(?!\s+(?:being|stands\s+for|is\s+short\s+for|is\s+for)\b)", text):
        if _letter_ok(text, m.start(1), m.end(1), 1):
            add(m.group(1), 1, m.start(1), m.end(1))
    return sorted(found.values(), key=lambda x: x.start)


def _groups(text: str, mentions: list[_Mention]) -> list[list[_Mention]]:
    """Mentions joined into lists: "A or C", "B, C and D", "A and C"."""
    groups: list[list[_Mention]] = []
    for mention in mentions:
        if groups and mention.letter not in {g.letter for g in groups[-1]}:
            gap = text[groups[-1][-1].end:mention.start]
            if _LIST_GAP.fullmatch(gap):
                groups[-1].append(mention)
                continue
        groups.append([mention])
    return groups


def _clause_before(text: str, start: int) -> str:
    before = text[max(0, start - 60):start]
    cut = max(before.rfind(p) for p in (".", ";", "!", "?", "\n", " but ", " so ", " however"))
    return before[cut + 1:] if cut >= 0 else before


def _mark(text: str, mentions: list[_Mention], options: Mapping[str, str]) -> None:
    for group in _groups(text, mentions):
        first, last = group[0], group[-1]
        before = _clause_before(text, first.start)
        before_tight = text[max(0, first.start - 45):first.start]
        after = text[last.end:last.end + 80]
        rejected = bool(_NEGATION_BEFORE.search(before_tight) and _NEGATION_BEFORE.search(before)
                        or _LETTER_IS_WRONG.match(after) or _SAME_VERDICT.search(text[max(0, first.start - 60):
                                                                                      first.start]))
        if not rejected and first.tier < 3:
            # "A) Paris is wrong", "option B, the steel spoon, is incorrect": the verdict after the option's text
            text_after = options.get(first.letter)
            if text_after:
                m = re.match(rf"^[)\].:,\s]*{re.escape(text_after.strip().rstrip('.'))}[.,]?\s*", after, re.I)
                if m and _LETTER_IS_WRONG.match(after[m.end():]):
                    rejected = True
        conj = " ".join(text[a.end:b.start].lower() for a, b in zip(group, group[1:]))
        several = len({g.letter for g in group}) > 1
        hedged = (several and "or" in conj.split()) or bool(
            (len(group) == 1 or several) and (_HEDGE_BEFORE.search(before_tight) or _HEDGE_AFTER.match(after)))
        # "B is correct" raises a named mention to a conclusive one
        if not rejected and len(group) == 1 and _LETTER_IS_RIGHT.match(after):
            first.tier = 3
        alternative = not rejected and bool(_ALTERNATIVE_AFTER.match(after) or _ALTERNATIVE_BEFORE.search(before_tight))
        for g in group:
            g.rejected, g.hedged = rejected, (hedged or alternative) and not rejected
            g.alternative = alternative
            g.corrected = bool(_CORRECTION.search(text[max(0, g.start - 50):g.start]))


_STEM_STOP = {"which", "what", "who", "whom", "whose", "where", "when", "why", "how", "of", "these", "following",
              "this", "that", "is", "are", "was", "were", "be", "do", "does", "did", "in", "on", "to", "and", "or",
              "for", "with", "by", "at", "from", "it", "its", "most", "likely", "best", "one", "would", "you", "your",
              "can", "could", "should", "not", "answer", "question", "option", "options", "choice", "choose", "true",
              "correct", "statement", "describes", "there", "their", "they", "as", "has", "have", "an", "a", "the"}


def _stem_words(question: str | None, options: Mapping[str, str]) -> set[str]:
    """The content words of the question itself (its options cut off), lightly stemmed."""
    if not question:
        return set()
    m = re.search(r"(?:^|\s)[(\[]?A[)\].:]\s", question)
    stem = question[:m.start()] if m else question
    for opt in options.values():
        stem = stem.replace(opt, " ")
    return {_stemmed(w) for w in normalise(stem).split() if w not in _STEM_STOP and (len(w) > 1 or w.isdigit())}


def _stemmed(word: str) -> str:
    return re.sub(r"(?:ing|ed|es|s)$", "", word) if len(word) > 4 else word


def _restating_sentence_choice(text: str, options: Mapping[str, str], stem: set[str],
                               candidates: list[str]) -> str | None:
    """The option named by the sentences that restate the question ("Romeo and Juliet was written by
    William Shakespeare."): an answer-first response names its answer in the sentence that echoes the question and
    the other options in the explanation after it. None unless those sentences agree on exactly one option."""
    if not stem:
        return None
    picks: set[str] = set()
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+", text):
        said = normalise(sentence)
        words = {_stemmed(w) for w in said.split()}
        if not said or len(stem & words) / len(stem) < 0.5 or "?" in sentence:
            continue
        if re.search(r"\b(?:maybe|perhaps|possibly|might|could|either|unsure|not sure)\b", said):
            return None
        named, applied = set(), set()
        surnames = _surnames(options)
        for k in candidates:
            phrase = normalise(options[k])
            if k in surnames and not re.search(_phrase(phrase), said):
                phrase = surnames[k].lower()
            for m in re.finditer(_phrase(phrase), said):
                if not re.search(r"\b(?:not|never|nor|t|than|instead of|unlike)\s+(?:\S+\s+)?$", said[:m.start()]):
                    named.add(k)
                    before = said[:m.start()].split()
                    if before and _stemmed(before[-1]) in stem:
                        applied.add(k)  # the question's own word right before it: "plants absorb carbon dioxide"
        if len(named) > 1:
            if len(applied) != 1:
                return None
            named = applied
        picks |= named
    return picks.pop() if len(picks) == 1 else None


# clauses end at sentence ends (not at a name's initial: "G. R. R. Martin"), commas, dashes and contrasts
_CLAUSE_SPLIT = re.compile(r"(?<!\s[A-Z])(?<!^[A-Z])[.;!?\n]+(?:\s|$)|,\s|\s[-—]+\s|"
                           r"\s(?=(?:but|so|though|although|while|whereas)\b)", re.I)
_DISMISSED = re.compile(r"\b(?:not|no|never|nothing|none|neither|nor|out|wrong|incorrect|false|irrelevant|unrelated|"
                        r"nope|nah|isn'?t|aren'?t|wasn'?t|weren'?t|doesn'?t|don'?t|didn'?t|won'?t|can'?t|cannot|"
                        r"mix\w*\s+(?:\w+\s+)?up|confus\w*|misconception)\b|n't\b|不是|不对|不正确|错|排除|不可能|并非"
                        r"|\binstead\W*$|\bthe\s+opposite\b|\bthe\s+reverse\b",
                        re.I)
_VERDICT_ONLY = re.compile(r"^\W*(?:(?:definitely|certainly|clearly|obviously|probably|also)\s+)?(?:no|nope|nah|not|"
                           r"wrong|out|not\s+(?:it|that|this\s+one|that\s+one|really)|a\s+different\s+\w+|someone\s+else|"
                           r"something\s+else)\W*$", re.I)
_SINGLED = re.compile(r"\b(?:is|'s)\s+the\s+(?:one|answer|right\s+one|correct\s+one)\b|\bthat\s+leaves\b|\bleaving\b|"
                      r"\bit'?s\s+(?:the\s+)?\w+(?:\s+\w+)?\s+that\b|\b(?:go|going)\s+with\b|\bthe\s+odd\s+one\s+out\b|"
                      r"\bthat'?s\s+(?:your|the|our)\s+(?:answer|one|pick)\b|\bwhat\s+(?:actually\s+)?happened\s+was\b|"
                      r"\bthe\s+(?:real|actual|correct|right)\s+(?:answer|one|cause|reason)\b"
                      , re.I)
# "X is what kicked off World War One": X singled out when what follows echoes the question's words
_SINGLED_WHAT = re.compile(r"\b(?:is|was|are|were)\s+what\s+(?:actually\s+|really\s+|finally\s+)?"
                           r"(?!(?:people|most|many|some|everyone|you|they|we|i|it)\b)(.*)", re.I)


def _walkthrough(text: str, options: Mapping[str, str], stem: set[str] | None = None) -> tuple[set[str], set[str]]:
    """For an answer that walks through the options in prose: the options it dismisses in every clause that names
    them (a negation in the clause, or a bare verdict right after it: "X, no."), and those it singles out in a
    clause ("X is the one", "that leaves X", "it's X that", "X is what started World War One" when the words after
    "is what" echo the question's ``stem`` words)."""
    clauses = [c for c in _CLAUSE_SPLIT.split(text) if c and c.strip()]
    norm = {k: normalise(v) for k, v in options.items()}
    words = {k: {w for w in v.split() if len(w) > 3} for k, v in norm.items()}
    distinct = {k: ws - set().union(*(words[o] for o in words if o != k)) for k, ws in words.items()}
    named: dict[str, list[bool]] = {}
    singled: set[str] = set()
    for i, clause in enumerate(clauses):
        said = normalise(clause)
        here = [k for k, phrase in norm.items() if phrase and re.search(_phrase(phrase), said)]
        here = [k for k in here if not any(o != k and norm[k] in norm[o] for o in here)]
        if not here:
            # "so I'd go with exercise": a singling cue with a word that only one option has
            words = set(said.split())
            owners = {k for k, ws in distinct.items() if ws & words}
            if len(owners) == 1 and _SINGLED.search(clause) and not _DISMISSED.search(clause):
                singled |= owners
            continue
        dismissed = bool(_DISMISSED.search(re.sub(r"\bodd\s+one\s+out\b", " ", _UNSURE.sub(" ", clause)))
                         or i + 1 < len(clauses) and _VERDICT_ONLY.match(clauses[i + 1]))
        for k in here:
            named.setdefault(k, []).append(dismissed)
            echo = _SINGLED_WHAT.search(clause)
            if not dismissed and (_SINGLED.search(clause) or echo and stem and len(
                    {_stemmed(w) for w in normalise(echo.group(1)).split() if len(w) > 3} & stem)):
                singled.add(k)
    return {k for k, flags in named.items() if all(flags)}, singled


def _phrase(phrase: str) -> str:
    """A regex for an option's (normalised) text as a whole phrase: between spaces, or anywhere for Chinese text,
    which has none."""
    return re.escape(phrase) if _HAS_CJK.search(phrase) else rf"(?<!\S){re.escape(phrase)}(?!\S)"


def _surnames(options: Mapping[str, str]) -> dict[str, str]:
    """{letter: surname} for the options that are personal names ("Sigmund Freud", "Ivan Pavlov"): two to four
    capitalised words, whose last word is no other option's word."""
    out = {}
    for letter, text in options.items():
        words = text.strip().rstrip(".").split()
        if 2 <= len(words) <= 4 and all(re.fullmatch(r"[A-Z][\w'.-]*", w) for w in words) and len(words[-1]) > 2:
            others = {w.lower() for o, t in options.items() if o != letter for w in t.split()}
            if words[-1].lower() not in others and not re.fullmatch(r"(?:Jr|Sr|II|III|IV)\.?", words[-1]):
                out[letter] = words[-1]
    return out


_UNSURE = re.compile(r"\b(?:i'?m|i\s+am)\s+not\s+(?:totally\s+|entirely\s+|really\s+|quite\s+|100%\s+)?sure\b|"
                     r"\bi\s+(?:don'?t|do\s+not)\s+(?:really\s+)?(?:know|remember)\b|不确定|不太确定|记不清", re.I)


def _option_text(text: str, options: Mapping[str, str], stem: set[str] | None = None) -> Extraction | None:
    said = normalise(text)
    if not said:
        return None
    norm = {k: normalise(v) for k, v in options.items()}
    hits: dict[str, list[tuple[int, int]]] = {}
    for letter, phrase in norm.items():
        if phrase:
            hits[letter] = [(m.start(), m.end()) for m in re.finditer(_phrase(phrase), said)]
    # a person named by surname alone: "Freud" for "Sigmund Freud" (capitalised in the response, and no other
    # option's word)
    for letter, surname in _surnames(options).items():
        if not hits.get(letter) and re.search(rf"(?<![\w'-]){re.escape(surname)}(?![\w'-])", text):
            hits[letter] = [(m.start(), m.end()) for m in re.finditer(rf"(?<!\S){re.escape(surname.lower())}(?!\S)",
                                                                      said)]
    # a hit inside a longer option's hit is that option's ("paris" inside "paris texas")
    for letter, spans in hits.items():
        hits[letter] = [s for s in spans if not any(o != letter and len(norm[o]) > len(norm[letter]) and
                                                     any(a <= s[0] and s[1] <= b for a, b in hits[o]) for o in hits)]
    def rejected(s: int, e: int) -> bool:
        before, after = said[max(0, s - 40):s], said[e:e + 40]
        return bool(re.search(r"\b(?:not|never|neither|nor|rather than|instead of|except|other than|eliminate\w*|"
                              r"exclude\w*|rule out)\s+(?:(?:even|really|exactly|just|necessarily)\s+)?$", before)
                    or re.match(rf"^\s*(?:is|are|was|would be|seems|can be)\s+(?:also\s+)?{_WRONG}\b", after))

    def hedged(s: int, e: int) -> bool:
        before, after = said[max(0, s - 30):s], said[e:e + 20]
        return bool(re.search(r"\b(?:either|maybe|perhaps|possibly|or|could be|might be|whether(?: it (?:was|is|s))?)"
                              r"\s+$", before)
                    or re.match(r"^\s*or\b", after))

    chosen = [k for k, spans in hits.items() if spans and not all(rejected(s, e) for s, e in spans)]
    open_ = [k for k in chosen if all(hedged(s, e) for s, e in hits[k])]
    if len(open_) >= 2 and _UNSURE.search(text):
        # "I'm not sure whether it was X or Y. I know Z was the general": unsure between options, none chosen
        return _fail(f"the response is unsure between options: {', '.join(sorted(open_))}", hedged=sorted(open_))
    if len(chosen) > 1:
        # a walk through the options: those dismissed in their own clause drop out ("darkness isn't going to do
        # it", "volcanic eruptions, no"); of the rest, the one the answer singles out ("sunlight is the one that
        # helps", "that leaves the outer core") is the answer
        dismissed, singled = _walkthrough(text, {k: options[k] for k in chosen}, stem)
        if dismissed and len(set(chosen) - dismissed) >= 1:
            chosen = [k for k in chosen if k not in dismissed]
        if len(chosen) > 1 and len(singled & set(chosen)) == 1:
            return Extraction((singled & set(chosen)).pop(), "option_text", details={"walkthrough": True})
    if len(chosen) > 1:
        firm = [k for k in chosen if not all(hedged(s, e) for s, e in hits[k])]
        if len(firm) == 1:
            chosen = firm
        else:
            # several options named: the one the response commits to ("the answer is ...", "it's ...")
            cued = [k for k in chosen if any(re.search(r"\b(?:answer is|answer would be|answer|it is|it s|its|would be|"
                                                       r"go with|choose|pick|i say|i d say|must be|i ll say|i will say|"
                                                       r"(?:and|so) that s|(?:and|so) thats|"
                                                       r"(?:is|s)\s+(?:a\s+)?(?:textbook|classic)(?:\s+example\s+of)?)\s+$",
                                                       said[max(0, s - 25):s]) for s, _ in hits[k])]
            if not cued:
                # a conclusion naming one option as what the question asks for: "... so the only mammal here is
                # the dolphin", "which means the answer has to be mercury"
                cued = [k for k in chosen if any(re.search(
                    r"\b(?:so|therefore|thus|hence|which means|that means|meaning|in short|in conclusion)\b"
                    r"(?:\s+(?!so\b|therefore\b|thus\b)\S+){0,8}?\s+(?:is|are|was|were|would be|must be|has to be|"
                    r"should be|it s|its)\s+$"
                    r"|\bwhat\b(?:\s+(?!is\b|what\b)\S+){1,10}?\s+is\s+$"
                    r"|\b(?:the\s+)?one\s+(?:that|which|who)\b(?:\s+\S+){0,10}?\s+(?:is|are|was|were)\s+$",
                    said[max(0, s - 80):s]) for s, _ in hits[k])]
            if not cued:  # "... so France it is"
                cued = [k for k in chosen if any(re.search(r"\bso\s+$", said[max(0, s - 4):s])
                                                 and re.match(r"\s+it is\b", said[e:]) for s, e in hits[k])]
            if len(cued) == 1:
                return Extraction(cued[0], "option_text", details={"named": sorted(chosen)})
            # an answer-first response opens with the option's text: "Franklin D. Roosevelt. He was elected ..."
            first = normalise(re.split(r"(?<=[.!?])\s+|\s[-—]+\s", text.strip(), maxsplit=1)[0])
            listed = [k for k in chosen if any(a < len(first) for a, _ in hits[k])]
            opening = [k for k in chosen
                       if re.match(rf"^\W*{re.escape(options[k].strip().rstrip('.'))}\s*(?:[.!,:;-]|$)", text, re.I)]
            if len(opening) == 1 and len(listed) == 1:
                return Extraction(opening[0], "option_text", details={"named": sorted(chosen), "opens_with": True})
            # a closing conclusion that names one option: "... So the stratosphere."
            last = re.split(r"(?<=[.!?])\s+", text.strip())[-1]
            closing = [k for k in chosen if re.match(
                rf"^\W*(?:so|therefore|thus|hence|which\s+means|that\s+means)\W+(?:it'?s\s+|its\s+|the\s+answer\s+is\s+)?"
                rf"(?:the\s+)?{re.escape(options[k].strip().rstrip('.'))}\W*$", last, re.I)]
            if len(closing) == 1:
                return Extraction(closing[0], "option_text", details={"named": sorted(chosen), "closes_with": True})
            if re.search(r"\bit\s+(?:really\s+|all\s+)?depends\b|\bdepends\s+(?:on|entirely\s+on)\s+"
                         r"(?:your|you|the\s+person|what\s+you|who|how)\b", text, re.I):
                return _fail(f"the response names several options and says it depends: {', '.join(sorted(chosen))}",
                             named=sorted(chosen))
            restated = _restating_sentence_choice(text, options, stem or set(), chosen)
            if restated is not None:
                return Extraction(restated, "option_text", details={"named": sorted(chosen), "restates_question": True})
            return _fail(f"the response names several options: {', '.join(sorted(chosen))}", named=sorted(chosen))
    if len(chosen) == 1:
        if all(hedged(s, e) for s, e in hits[chosen[0]]):
            return _fail(f"the response offers option {chosen[0]} only as a possibility")
        return Extraction(chosen[0], "option_text")
    # no option's full text: the one option most of whose distinctive words the response uses
    stop = {"of", "in", "on", "to", "and", "or", "for", "with", "by", "at", "from", "is", "are", "it", "its", "be",
            "that", "this", "as", "into", "than", "more", "less", "very", "all", "some", "one"}
    said_words = set(said.split())
    words = {k: {w for w in v.split() if w not in stop} for k, v in norm.items()}
    coverage = {}
    for k, ws in words.items():
        others = set().union(*(words[o] for o in words if o != k)) if len(words) > 1 else set()
        distinct = ws - others
        if distinct:
            coverage[k] = len(distinct & said_words) / len(distinct)
    ranked = sorted(coverage.items(), key=lambda kv: -kv[1])
    if ranked and ranked[0][1] >= 0.6 and (len(ranked) == 1 or ranked[1][1] < 0.34):
        letter = ranked[0][0]
        probe = " ".join(w for w in words[letter] if w in said_words)
        first = next(w for w in said.split() if w in words[letter])
        pos = said.find(first)
        if not rejected(pos, pos + len(first)) and probe:
            return Extraction(letter, "option_words", details={"coverage": round(ranked[0][1], 2)})
    # a committed answer that names an option by a word only it has: "so basically it would be the tilt"
    distinct_words = {k: words[k] - set().union(*(words[o] for o in words if o != k)) for k in words}
    owners = set()
    for m in re.finditer(r"\b(?:answer is|answer would be|it is|it s|would be|must be|has to be|go with|choose|pick|"
                         r"i d say|i say|i think it s)\s+(\S+)", said):
        owners |= {k for k, ws in distinct_words.items() if m.group(1) in ws and not rejected(m.start(1), m.end(1))}
    if len(owners) == 1:
        return Extraction(owners.pop(), "option_words", details={"cued_word": True})
    return None


def extract_choice(response: str | None, options: Mapping[str, str] | None = None,
                   letters: str | None = None, question: str | None = None) -> Extraction:
    """The one option letter the response commits to.

    Args:
        response: the model's answer.
        options: {letter: option text} (see `options_from`); lets the text of an option count as choosing it and
            limits the letters to the options'.
        letters: the allowed letters when ``options`` is not given (default A–E).
        question: the question (the prompt; its listed options are ignored). When the response names several
            options' texts, the one named in the sentence that restates the question is the answer.

    Returns:
        `Extraction` with ``value`` the letter and ``method`` ``"letter"`` (an explicit statement or named
        option), ``"bare_letter"`` (a lone capital letter), ``"option_text"`` (the text of one option),
        ``"option_words"`` (most distinctive words of one option); or ``value=None`` with the reason (several
        letters, only hedges, only rejections, nothing found). ``details`` lists ``rejected`` / ``hedged`` letters.
    """
    if response is None or not response.strip():
        return _fail("empty response")
    options = dict(options or {})
    allowed = "".join(sorted(options)) if options else (letters or "ABCDE")
    text = _chinese_cues(_cjk_spaced(_clean(response)))
    if options and _HAS_CJK.search(text):
        options = {k: _cjk_spaced(v) for k, v in options.items()}
    whole = _choice(text, options, allowed, question)
    withdrawn = list(_WITHDRAW.finditer(text))
    if whole.ok and withdrawn:
        after = _choice(text[withdrawn[-1].end():], options, allowed, question)
        if not after.ok:
            return _fail(f"the response takes its answer back ({withdrawn[-1].group(0)!r})", **whole.details)
    # "I'd go with B. Let me rethink that. ... So the answer is C.": what follows the last self-correction is the
    # answer; when it names no option the whole response is read, when it hedges the response has no answer
    cues = list(_RECONSIDER.finditer(text))
    if cues:
        tail = _choice(text[cues[-1].end():], options, allowed, question)
        if tail.ok:
            if tail.value != whole.value:
                return Extraction(tail.value, tail.method, details={**tail.details, "corrected_from": whole.value,
                                                                     "after": cues[-1].group(0)})
            return whole
        if tail.reason and re.search(r"hedge|several|open|possibility", tail.reason):
            return _fail(f"after {cues[-1].group(0)!r}: {tail.reason}", **tail.details)
    return whole


# A self-correction: what comes after it replaces what came before ("wait" / "scratch that" / "let me rethink").
_RECONSIDER = re.compile(
    r"\b(?:wait|scratch\s+that|on\s+second\s+thought|correction|corrected\s+answer|i\s+misspoke|i\s+meant|"
    r"let\s+me\s+(?:rethink|reconsider|correct|think\s+again|redo|revise|re-?think)|change\s+my\s+answer|"
    r"i\s+take\s+(?:that|it)\s+back|(?:up)?on\s+reflection|no,?\s+sorry|sorry,?\s+no|hmm+,?\s+no|actually,?\s+no|"
    r"my\s+mistake|oops|i\s+was\s+wrong|hold\s+on|hang\s+on)\b|(?<=\?)\s*(?:no|nope|nah)\b", re.IGNORECASE)
# Taking the answer back after giving it: "... that's B. Actually, some guidelines say ... so maybe neither."
_WITHDRAW = re.compile(r"\b(?:so\s+)?(?:maybe|perhaps|possibly|probably)\s+(?:neither|none\s+of\s+(?:them|these|those|"
                       r"the\s+(?:above|options)))\b|都不对|都不是|(?:答案|选择)?我?先?(?:收回|撤回)"
                       r"|\bi\s+take\s+back\s+(?:the|my)\b|\b(?:i'?ll|i\s+will)\s+leave\s+it\s+open\b"
                       r"|\bnot\s+confident\s+enough\s+to\s+(?:pick|choose|say)\b|\bcan'?t\s+say\s+which\b"
                       r"|\bnot\s+sure\s+which\s+(?:one\s+)?to\s+(?:give|pick|choose)\b", re.IGNORECASE)


def _choice(text: str, options: dict[str, str], allowed: str, question: str | None) -> Extraction:
    """`extract_choice` on cleaned text."""
    mentions = _mentions(text, allowed)
    # a capital letter inside an option's own text is not a choice: "vitamin C", "W. E. B. Du Bois"
    inside = [(m.start(), m.end()) for v in options.values() if re.search(r"(?<![\w'])[A-J](?![\w'])", v)
              for m in re.finditer(rf"(?<!\w){re.escape(v.strip().rstrip('.'))}(?!\w)", text, re.IGNORECASE)]
    mentions = [m for m in mentions if not any(a <= m.start and m.end <= b for a, b in inside)]
    labels = {m.group(1).upper() for m in _LABEL_LINE.finditer(text)}
    if len(labels) >= 3:
        # the response lists the options ("A) ... B) ... C) ..."): line labels are an echo, not a choice
        label_starts = {m.start(1) for m in _LABEL_LINE.finditer(text)}
        mentions = [m for m in mentions if m.start not in label_starts]
    _mark(text, mentions, options)
    rejected = sorted({m.letter for m in mentions if m.rejected} - {m.letter for m in mentions if not m.rejected})
    hedged = sorted({m.letter for m in mentions if m.hedged})
    details: dict[str, Any] = {}
    if rejected:
        details["rejected"] = rejected
    if hedged:
        details["hedged"] = hedged
    # "The answer is D. Wait, no, I mean B": a letter right after a self-correction replaces the earlier ones,
    # however each was worded
    firm_all = [m for m in mentions if not m.rejected and not m.hedged]
    if len(firm_all) > 1 and any(m.letter != firm_all[-1].letter for m in firm_all[:-1]):
        last = firm_all[-1]
        if _CORRECTION_RIGHT_BEFORE.search(text[max(0, last.start - 60):last.start]):
            return Extraction(last.letter, "letter" if last.tier > 1 else "bare_letter",
                              details={**details, "corrected_from": sorted({m.letter for m in firm_all[:-1]}
                                                                            - {last.letter})})
    for tier, method in ((3, "letter"), (2, "letter"), (1, "bare_letter")):
        live = [m for m in mentions if m.tier == tier and not m.rejected]
        firm = [m for m in live if not m.hedged]
        if not live:
            continue
        letters_firm = list(dict.fromkeys(m.letter for m in firm))
        open_alternatives = sorted({m.letter for m in mentions if m.alternative} - set(letters_firm))
        if len(letters_firm) == 1 and open_alternatives:
            return _fail(f"the response keeps several options open: {', '.join(letters_firm + open_alternatives)}",
                         **details)
        if len(letters_firm) == 1 and not (tier < 3 and len({m.letter for m in live}) > 1):
            return Extraction(letters_firm[0], method, details=details)
        if len(letters_firm) > 1:
            last = firm[-1]
            if last.corrected:
                return Extraction(last.letter, method, details={**details, "corrected_from": letters_firm[:-1]})
            return _fail(f"several choices in the response: {', '.join(sorted(letters_firm))}", **details)
        return _fail(f"the response hedges between options: {', '.join(sorted({m.letter for m in live}))}",
                     **details)
    if options:
        found = _option_text(text, options, _stem_words(question, options))
        if found is not None and found.ok and found.value in rejected:
            # "... Indonesia is roughly 280 million, so it's not D either": the text names what the letter rejects
            return _fail(f"the response names option {found.value} only to reject it", **details)
        if found is not None:
            if found.ok:
                return Extraction(found.value, found.method, details={**details, **found.details})
            return _fail(found.reason or "", **{**details, **found.details})
    if rejected:
        return _fail(f"the response only rejects options ({', '.join(rejected)})", **details)
    return _fail("no choice found in the response", **details)


# -- yes / no -----------------------------------------------------------------------------------------------------
_YES_WORDS = (r"(?:yes|yeah|yep|yup|yea|aye|sure|absolutely|definitely|certainly|correct|indeed|true|right|of course|"
              r"affirmative)")
_NO_WORDS = r"(?:no|nope|nah|not really|not at all|absolutely not|definitely not|certainly not|of course not|" \
            r"not quite|not exactly|false|incorrect|wrong|negative|no way|never)"
_FILLER = r"(?:(?:well|so|hmm+|um+|uh+|okay|ok|oh|ah|great question|good question|short answer|in short|" \
          r"the short answer is|honestly|actually|to answer your question|simply put)[,:!.]?\s+)*"
_ANSWER_CUE = re.compile(
    r"\b(?:the\s+)?(?:final\s+|short\s+|simple\s+|correct\s+|my\s+)?(?:answer|verdict|conclusion)\s*"
    r"(?:to\s+(?:the|your)\s+question\s+)?(?:\([^)]*\)\s*)?"
    r"(?:is|would be|will be|should be|is simply|here is|:|-)\s*[\"'(\[]?(yes|no|true|false)\b", re.IGNORECASE)
_LEADING = re.compile(rf"^\W*{_FILLER}(?P<w>{_NO_WORDS}|{_YES_WORDS})(?P<after>.{{0,30}})", re.IGNORECASE | re.S)
# "no" that is not an answer: "no doubt", "no problem"
_NO_NOT_ANSWER = re.compile(r"^\s+(?:doubt|problem|wonder|matter|one|longer|need|worries|question|more|other|such|"
                            r"reason|evidence|idea|way to|less|kidding)\b", re.IGNORECASE)
_YES_NOT_ANSWER = re.compile(r"^\s+(?:or\s+no|and\s+no|/no)\b", re.IGNORECASE)
_SHORT_ANSWER = re.compile(
    rf"^\W*{_FILLER}(?:it|that|they|he|she|there|you|we|i)\s*(?:'s)?\s*(?:is|are|does|do|did|was|were|can|could|will|"
    r"would|has|have|had|am|should|must)?(?P<neg>n't|\s+not)?\s*(?:[.!;]|,\s|$)", re.IGNORECASE)
_NO_PHRASES = re.compile(
    r"\b(?:i\s+(?:do\s+not|don't|dont)\s+(?:think|believe)\s+so|i\s+doubt\s+(?:it|that)|that'?s\s+not\s+(?:true|right|"
    r"correct|the case)|that\s+is\s+not\s+(?:true|right|correct|the case)|(?:it|this|that)\s+is\s+(?:false|incorrect)|"
    r"(?:it|this|that)'?s\s+(?:false|incorrect)|not\s+(?:true|the case)|unfortunately\s+not|i'?m\s+afraid\s+not|"
    r"sadly\s+not|probably\s+not|likely\s+not|nope|no\s+way|(?:that|it|this)(?:'s|\s+is)\s+(?:wrong|not\s+so|"
    r"(?:(?:a|an|just\s+a|actually\s+a)\s+)?(?:(?:common|popular|widespread|persistent|old|total|complete|big)\s+)?"
    r"(?:myth|misconception|misunderstanding|urban\s+legend|old\s+wives'?\s+tale))|contrary\s+to\s+(?:popular|common)\s+"
    r"belief)\b", re.IGNORECASE)
_YES_PHRASES = re.compile(
    r"\b(?:i\s+(?:think|believe)\s+so|that'?s\s+(?:true|right|correct)|that\s+is\s+(?:true|right|correct)|"
    r"(?:it|this)\s+is\s+(?:true|correct)|(?:it|this)'?s\s+(?:true|correct)|you'?re\s+(?:right|correct)|"
    r"you\s+are\s+(?:right|correct)|it\s+does|it\s+is|that'?s\s+the\s+case|indeed|absolutely|definitely|"
    r"certainly|of\s+course|for\s+sure|yeah|yep|yup|you\s+bet|sure\s+thing)\b", re.IGNORECASE)
_HEDGES = re.compile(r"\b(?:it depends|depends on|hard to say|difficult to say|not sure|unsure|can't say|cannot say|"
                     r"yes and no|both yes and no|maybe|possibly|it's complicated|no (?:clear|definitive) answer|"
                     r"don't know|do not know)\b", re.IGNORECASE)


# A first sentence that answers by stating the fact: "Penguins can't fly.", "21 is not a prime number." (no), "Most
# plants do need sunlight." (yes). The subject is not the speaker ("I can't tell you") nor a condition ("If you
# don't..."), and "not necessarily / not always / isn't clear" are hedges, not answers.
_SUBJECT = r"(?:(?!(?:i|we|if|when|unless|although|though|while|because|since|what|which|who|how|why|where|yes|no)\b)" \
           r"[\w'-]+\s+){1,6}?"
_STATED_NO = re.compile(
    rf"^\W*{_FILLER}{_SUBJECT}(?:can't|won't|cannot|(?:is|are|was|were|can|could|do|does|did|has|have|will|would|"
    r"should|may|might|must)(?:n't|\s+not|\s+never))\s+(?!(?:only|just|necessarily|always|entirely|exactly|quite|clear|certain|known|sure|"
    r"possible|easy|simple|straightforward|all|every|too|so|fully|completely|totally|yet|agree|know|that\s+simple|a\s+simple|an\s+easy|a\s+straightforward|"
    r"really\s+(?:a|an)\b)\b)", re.IGNORECASE)
_STATED_YES = re.compile(rf"^\W*{_FILLER}{_SUBJECT}(?:do|does|did)\s+(?!not\b|n't)[a-z]{{3,}}\b", re.IGNORECASE)
_QUESTION_STOP = {"is", "are", "was", "were", "am", "be", "do", "does", "did", "can", "could", "will", "would",
                  "should", "shall", "may", "might", "must", "has", "have", "had", "it", "its", "there", "you", "your",
                  "i", "we", "they", "of", "in", "on", "to", "for", "with", "by", "at", "from", "and", "or", "that",
                  "this", "true", "really", "actually", "ever", "any", "some", "very"}
_VERB_NEGATED = re.compile(r"\b(?:can't|won't)|\b(?:is|are|was|were|can|could|do|does|did|has|have|will|would|"
                           r"should|must)(?:n't|\s+not)\b"
                           r"|\b(?:cannot|never)\b", re.IGNORECASE)


def _restated_answer(text: str, question: str) -> str | None:
    """yes / no from a first sentence that restates every content word of the question: "17 is a prime number"
    (yes), "Glass is an amorphous solid, not a liquid" (no). A negation counts only on the verb or right before a
    word of the question; any other negation leaves it unread."""
    asked = _asked_words(question)
    first = _first_clause(text)
    said = normalise(first)
    words = [_stemmed(w) for w in said.split()]
    if not asked or not asked <= set(words) or "?" in first:
        return None
    negations = [i for i, w in enumerate(said.split()) if w in ("not", "never", "no", "cannot")]
    if not negations:
        return "yes"
    if _VERB_NEGATED.search(first) or any(w in asked for i in negations for w in words[i + 1:i + 4]):
        return "no"
    return None


def _asked_words(question: str) -> set[str]:
    return {_stemmed(w) for w in normalise(question).split() if w not in _QUESTION_STOP and (len(w) > 1 or w.isdigit())}


def _first_clause(text: str) -> str:
    first = re.split(r"(?<=[.!?;])\s+|\n+", text.strip())[0]
    return re.split(r"\b(?:but|although|though|however|except|while|whereas)\b", first, flags=re.I)[0]


def _shares_question_words(text: str, question: str) -> bool:
    asked = _asked_words(question)
    said = {_stemmed(w) for w in normalise(_first_clause(text)).split()}
    return not asked or len(asked & said) / len(asked) > 0.5


def extract_yes_no(response: str | None, question: str | None = None) -> Extraction:
    """``"yes"`` or ``"no"``: an explicit answer statement, else the opening word, else an answer phrase, else the
    one kind of standalone yes/no word, else a first sentence that states the fact (``Penguins can't fly.``), else
    (given the ``question``) a first sentence that restates the question with or without a negation; None when the
    response says both, hedges, or says neither."""
    if response is None or not response.strip():
        return _fail("empty response")
    text = _NEGATION_APOSTROPHES.sub(lambda m: _APOSTROPHE_FIX[m.group(0).lower()], _clean(response))
    cues = [m.group(1).lower() for m in _ANSWER_CUE.finditer(text)]
    if cues:
        said = {"true": "yes", "false": "no"}.get(cues[-1], cues[-1])
        return Extraction(said, "cue")
    m = _LEADING.match(text)
    if m:
        word, after = m.group("w").lower(), m.group("after")
        is_no = re.fullmatch(_NO_WORDS, word, re.IGNORECASE) is not None
        if is_no and word == "no" and _NO_NOT_ANSWER.match(after):
            pass
        elif not is_no and _YES_NOT_ANSWER.match(after):
            pass
        elif word in ("right", "true", "correct", "sure") and not re.match(r"^\s*[,.!;:-]|\s*$", after):
            pass  # "Right now ...", "True love ...", "Sure enough": not an answer word
        elif word in ("never", "wrong") and not re.match(r"^\s*[,.!;:-]|\s*$", after):
            pass
        else:
            said = "no" if is_no else "yes"
            rest = text[m.end("w"):]
            fix = _CORRECTION.search(rest)
            if fix:  # "Yes. Wait, no, it's no": the corrected answer
                later = _yes_no_words(rest[fix.end():])
                if len(later) == 1 and said not in later:
                    return Extraction(later.pop(), "leading", details={"corrected_from": said})
            return Extraction(said, "leading")
    m = _SHORT_ANSWER.match(text)
    if m:  # "It isn't.", "They do!"
        return Extraction("no" if m.group("neg") else "yes", "leading")
    no_p = _NO_PHRASES.search(text)
    yes_p = _YES_PHRASES.search(_NO_PHRASES.sub(" ", text))
    if no_p and not yes_p:
        return Extraction("no", "phrase", details={"phrase": no_p.group(0)})
    contradicted = _STATED_NO.match(text) or re.search(r"\b(?:it\s+is|it\s+does)\s+not\b|\bisn'?t\b|\bdoesn'?t\b",
                                                        text, re.I)
    if yes_p and not no_p and not contradicted:
        words = _yes_no_words(text)
        if "no" not in words:
            return Extraction("yes", "phrase", details={"phrase": yes_p.group(0)})
    words = _yes_no_words(text)
    if len(words) == 1:
        return Extraction(words.pop(), "word")
    if len(words) == 2:
        return _fail("the response says both yes and no")
    if _HEDGES.search(text):
        return _fail("the response hedges without a yes or no")
    # given the question, a stated fact answers it only when it is about what was asked ("Sharks are not
    # mammals" does not answer "Are sharks fish?")
    if not question or _shares_question_words(text, question):
        if _STATED_NO.match(text):
            return Extraction("no", "statement")
        if _STATED_YES.match(text):
            return Extraction("yes", "statement")
    if question:
        said = _restated_answer(text, question)
        if said:
            return Extraction(said, "restates_question")
    return _fail("no yes or no in the response")


def _yes_no_words(text: str) -> set[str]:
    said = set()
    for m in re.finditer(r"\b(yes|no)\b", text, re.IGNORECASE):
        word, after = m.group(1).lower(), text[m.end():m.end() + 30]
        if word == "no" and _NO_NOT_ANSWER.match(after):
            continue
        if re.match(r"\s*(?:or|and|/)\s*(?:yes|no)\b", after, re.I) or re.search(r"\b(?:yes|no)\s*(?:or|and|/)\s*$",
                                                                                   text[:m.start()], re.I):
            continue  # "a yes or no question"
        if re.search(r"\b(?:maybe|perhaps|possibly)\s*$", text[:m.start()], re.I):
            continue  # "maybe yes?": a hedge, not an answer
        if word == "no" and re.match(r"\s+[a-z]+", after) and not re.match(
                r"\s+(?:it|that|this|they|he|she|you|i|we|there|the|not|way|sir|ma'am)\b", after, re.I):
            continue  # "no evidence", "no reason": a determiner
        said.add(word)
    return said


# -- numbers ------------------------------------------------------------------------------------------------------
def extract_number(response: str | None) -> Extraction:
    """The number the response answers with (``12``, ``twelve``, ``$1,200``, ``3.5``): the number after its last
    cue (``the answer is``, ``=``, ``total``), else its last number. Spoken numbers are read with Whisper's
    English normaliser (``one hundred and twenty`` → 120)."""
    if response is None or not response.strip():
        return _fail("empty response")
    value, reason = _judge_extract_number(_clean(response))
    if value is None:
        return _fail(reason or "no number in the response")
    return Extraction(value, "number")


def number_matches(value: float, reference: str) -> bool | None:
    """Does ``value`` equal the reference number (within half a unit of its last decimal)? None when the reference
    is not a number."""
    ref = reference_number(reference)
    return None if ref is None else numbers_match(value, *ref)


def reference_choice(reference: str | None, options: Mapping[str, str] | None = None) -> str | None:
    """The letter a multiple-choice reference names (``B``, ``(b)``, ``Option B``) or whose option it quotes."""
    if reference is None or not str(reference).strip():
        return None
    letter = reference_letter(str(reference), dict(options) if options else None)
    if letter is None:
        m = re.fullmatch(r"\W*\(?([A-Ja-j])\)?\W*", str(reference).strip())
        letter = m.group(1).upper() if m else None
    return letter


def __getattr__(name: str) -> Any:
    """``detect_refusal`` (`rewards.refusal`) and ``extract_bbh`` (`rewards.bbh`) use this module's helpers and are
    re-exported here."""
    if name == "detect_refusal":
        from rewards.refusal import detect_refusal

        return detect_refusal
    if name == "extract_bbh":
        from rewards.bbh import extract_bbh

        return extract_bbh
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BBH_TASKS", "Extraction", "LETTERS", "extract_choice", "extract_number",
    "extract_yes_no", "number_matches", "options_from", "reference_choice",
]

