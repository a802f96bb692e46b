"""Write the training and held-out prompts of `wavalign align` (benchmarks/align/train.jsonl, heldout.jsonl).

Questions with checkable answers — arithmetic, unit conversions, capitals, simple facts — plus style requests
("say ... in an excited voice"), each with a short reference answer (the SFT target of the hybrid loss) in the
seed's JSONL schema: ``messages``, ``question_text``, ``sft_target_text`` (and ``style`` for style requests), plus
``answer``: the short checkable answer the reward's judge compares with (``12``, ``Nairobi``; for a style request
the line to say). The whole sentence would not do: MiniLM finds "5 plus 7 is thirteen" close to "5 plus 7 is
twelve", so a wrong sum would pass.
Deterministic: ``python benchmarks/align/make_prompts.py`` rewrites the same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
            ("Canada", "Ottawa"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"),
            ("Greece", "Athens"), ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Austria", "Vienna"),
            ("Portugal", "Lisbon"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Chile", "Santiago"),
            ("Cuba", "Havana"), ("Thailand", "Bangkok"), ("Russia", "Moscow"), ("China", "Beijing"),
            ("India", "New Delhi"), ("Mexico", "Mexico City"), ("Argentina", "Buenos Aires")]
FACTS = [("How many legs does a spider have?", "A spider has eight legs.", "8"),
         ("How many days are in a week?", "There are seven days in a week.", "7"),
         ("What color is the sky on a clear day?", "The sky is blue on a clear day.", "blue"),
         ("What do bees make?", "Bees make honey.", "honey"),
         ("Which planet is known as the red planet?", "Mars is known as the red planet.", "Mars"),
         ("What is frozen water called?", "Frozen water is called ice.", "ice"),
         ("How many months are in a year?", "There are twelve months in a year.", "12"),
         ("What gas do plants take in?", "Plants take in carbon dioxide.", "carbon dioxide"),
         ("How many hours are in a day?", "There are twenty four hours in a day.", "24"),
         ("What is the largest ocean?", "The Pacific is the largest ocean.", "Pacific"),
         ("How many sides does a triangle have?", "A triangle has three sides.", "3"),
         ("What animal is known as the king of the jungle?", "The lion is known as the king of the jungle.", "lion")]
UNITS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("hours", "minutes", 60),
         ("minutes", "seconds", 60), ("kilograms", "grams", 1000), ("liters", "milliliters", 1000)]
STYLES = [("excited", "I won the lottery!"), ("sad", "I lost my keys again."), ("calm", "Everything will be fine."),
          ("angry", "You broke my favorite mug!"), ("happy", "It is a beautiful sunny day."),
          ("whisper", "The baby is sleeping."), ("surprised", "You came all this way?"),
          ("fearful", "Did you hear that noise?")]


def rows(rng: random.Random) -> list[dict]:
    out = []
    for a in range(2, 10):
        for b in range(2, 10):
            if a + b <= 20:
                out.append((f"What is {a} plus {b}?", f"{a} plus {b} is {WORDS[a + b]}.", str(a + b)))
            out.append((f"What is {a} times {b}?", f"{a} times {b} is {a * b}.", str(a * b)))
    for big, small, factor in UNITS:
        for n in range(1, 6):
            out.append((f"How many {small} are in {n} {big}?", f"{n} {big} is {n * factor} {small}.", str(n * factor)))
    for country, capital in CAPITALS:
        out.append((f"What is the capital of {country}?", f"The capital of {country} is {capital}.", capital))
    out += FACTS
    rows = [{"question_text": q, "sft_target_text": a, "answer": short} for q, a, short in out]
    for style, line in STYLES:
        for template in ("Say '{line}' in a {style} voice.", "Please say '{line}' sounding {style}.",
                         "Read this in a {style} tone: {line}"):
            rows.append({"question_text": template.format(line=line, style=style), "sft_target_text": line,
                         "answer": line, "style": style})
    rng.shuffle(rows)
    for k, row in enumerate(rows):
        row["id"] = f"align-{k:04d}"
        row["messages"] = [{"role": "user", "content": row["question_text"]}]
    return rows


def main() -> None:
    all_rows = rows(random.Random(0))
    heldout, train = all_rows[:40], all_rows[40:]
    for name, part in (("train.jsonl", train), ("heldout.jsonl", heldout)):
        with (HERE / name).open("w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps({k: row[k] for k in ("id", "messages", "question_text", "sft_target_text", "answer")}
                                   | ({"style": row["style"]} if "style" in row else {})) + "\n")
    print(f"wrote {len(train)} training and {len(heldout)} held-out prompts to {HERE}")


if __name__ == "__main__":
    main()
