"""Training prompts for `wavalign align`: the seed's JSONL schema as is, or our benchmark format.

Seed schema (one JSON object per line)::

    {"messages": [{"role": "user", "content": "<|audio|>"}], "audios": ["q1.wav"],
     "question_text": "what is two plus two", "sft_target_text": "Two plus two is four.",
     "sft_target_audio": "a1.wav"}

A spoken turn is a ``<|audio|>`` placeholder (the seed's; ``<audio>`` works too) in a message's text, taking the
next file of ``audios``. It reaches a policy that hears audio as audio; for a text-input policy the loop puts the
row's ``question_text`` in its place, and skips (and reports) a spoken row without one.

Benchmark format (`wavalign eval` items): ``{"id", "prompt", "reference", "audio", "style"}``; the prompt becomes
the user turn and the reference the SFT target.

Bad rows (no question, an empty target, a missing audio file) are reported with their line number and skipped;
the rest train. Relative paths are resolved against the data file's folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalsuite.inputs import jsonl_lines

AUDIO = "<audio>"  # a spoken turn's placeholder in messages (as `align.interleaved.AUDIO_PLACEHOLDER`)
SEED_AUDIO = "<|audio|>"  # the seed's spelling, read as AUDIO


@dataclass(frozen=True)
class Example:
    """One training prompt and its reference answer."""

    id: str
    messages: list[dict[str, Any]]
    audios: list[str] = field(default_factory=list)
    question_text: str | None = None
    target_text: str = ""
    target_audio: str | None = None
    style: str | None = None
    answer: str | None = None  # the short checkable answer the reward judges against (None: the target text)

    @property
    def judge_reference(self) -> str:
        """What the reward's judge compares an answer with: the short ``answer`` when the row has one."""
        return self.answer or self.target_text

    def text_messages(self) -> list[dict[str, Any]]:
        """The conversation with spoken turns replaced by the question's transcript (for text-input policies)."""
        if not self.audios:
            return self.messages
        out = [dict(m) for m in self.messages]
        for m in out:
            if isinstance(m.get("content"), str) and AUDIO in m["content"]:
                m["content"] = m["content"].replace(AUDIO, self.question_text or "").strip()
        return out


def _row_to_example(row: dict[str, Any], line: int, base: Path) -> tuple[Example | None, str | None]:
    item_id = str(row.get("id") or f"line{line}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return None, "messages must be a non-empty list of {role, content} objects"
        messages = [{**m, "content": m["content"].replace(SEED_AUDIO, AUDIO)} if isinstance(m.get("content"), str)
                    else m for m in messages]
        target = row.get("sft_target_text")
        audios = [str(a) for a in row.get("audios") or []]
        question = row.get("question_text")
        target_audio = row.get("sft_target_audio")
    elif "prompt" in row:
        if not str(row.get("prompt") or "").strip():
            return None, "empty prompt"
        messages = [{"role": "user", "content": str(row["prompt"])}]
        target = row.get("reference") if row.get("reference") is not None else row.get("sft_target_text")
        audios, question, target_audio = [], str(row["prompt"]), None
    else:
        return None, "neither 'messages' (seed schema) nor 'prompt' (benchmark format)"
    if not str(target or "").strip():
        return None, "empty target (sft_target_text / reference)"
    resolved = []
    for a in audios:
        path = Path(a) if Path(a).is_absolute() else base / a
        if not path.is_file():
            return None, f"missing audio {a}"
        resolved.append(str(path))
    n_placeholders = sum(str(m.get("content", "")).count(AUDIO) for m in messages)
    if n_placeholders != len(resolved):
        return None, f"{n_placeholders} <audio> placeholders but {len(resolved)} audios"
    if target_audio:
        path = Path(target_audio) if Path(target_audio).is_absolute() else base / target_audio
        target_audio = str(path) if path.is_file() else None
    return Example(id=item_id, messages=messages, audios=resolved, question_text=question,
                   target_text=str(target).strip(), target_audio=target_audio, style=row.get("style"),
                   answer=str(row["answer"]).strip() if str(row.get("answer") or "").strip() else None), None


def read_examples(path: str | Path) -> tuple[list[Example], list[str]]:
    """The usable examples of a JSONL file and one message per skipped row."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data {path} does not exist")
    examples, problems = [], []
    for line, row, error in jsonl_lines(path):
        if error is not None or not isinstance(row, dict):
            problems.append(f"{path.name} line {line}: {error or 'not a JSON object'}; skipped")
            continue
        example, problem = _row_to_example(row, line, path.parent)
        if example is None:
            problems.append(f"{path.name} line {line}: {problem}; skipped")
        else:
            examples.append(example)
    if not examples:
        raise ValueError(f"no usable rows in {path}" + (f" ({problems[0]})" if problems else ""))
    return examples, problems


class Cursor:
    """Endless shuffled passes over the examples; its state (epoch, position) is saved for exact resume."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch, self.pos = n, seed, 0, 0
        self._order = self._shuffle()

    def _shuffle(self) -> list[int]:
        order = list(range(self.n))
        random.Random(self.seed * 1000003 + self.epoch).shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            if self.pos >= self.n:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._shuffle()
            out.append(self._order[self.pos])
            self.pos += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._order = self._shuffle()
