"""Wall time of `wavalign eval --benchmark demo`, split into answering and scoring, and the scoring part against a
per-item sequential loop over the same scorers (models loaded once, one item per call, no batching).

    python benchmarks/perf/eval_demo.py [--model cascade] [--limit N] [--out /tmp/eval-demo]

Prints the figures; the README quotes them. The loop re-scores the run's own saved answers, so both sides score
identical inputs; it reports how many per-item values agree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cascade")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("/tmp/wavalign-eval-demo"))
    args = parser.parse_args()

    shutil.rmtree(args.out, ignore_errors=True)
    cmd = [sys.executable, "-m", "cli", "eval", "--benchmark", "demo", "--model", args.model, "-o", str(args.out),
           "--no-progress", "--no-leaderboard"] + (["--limit", str(args.limit)] if args.limit else [])
    tick = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if done.returncode not in (0, 1):
        sys.exit(f"eval failed ({done.returncode}): {done.stderr[-2000:]}")
    results = json.loads((args.out / "results.json").read_text())
    sec = results["seconds"]
    n = results["n_items"]
    print(f"wavalign eval --benchmark demo --model {args.model}: {n} items, wall {wall:.1f} s (process, models "
          f"loaded included)")
    print(f"  in the runner: answering {sec['generate']:.1f} s, scoring {sec['score']:.1f} s, prompt audio "
          f"{sec['prompt_audio']:.2f} s, total {sec['total']:.1f} s")
    print("  scoring by scorer: " + ", ".join(f"{k} {v:.1f} s" for k, v in sec["by_scorer"].items()))

    loop_s, agree, compared = sequential_loop(args.out, results)
    print(f"per-item sequential loop over the same scorers and answers: {loop_s:.1f} s")
    print(f"  runner scoring {sec['score']:.1f} s vs loop {loop_s:.1f} s: {loop_s / max(sec['score'], 1e-9):.2f}x")
    print(f"  per-item values identical: {agree}/{compared}")


def sequential_loop(out: Path, results: dict) -> tuple[float, int, int]:
    """Score each saved answer alone with each scorer, in the runner's order (asr first); time the scoring only."""
    from evalsuite.benchmark import load_benchmark, matches
    from evalsuite.eval import EvalConfig, plan_scorers
    from rewards.audio import load_audio
    from rewards.base import Sample, score_each
    from rewards.registry import build

    bench = load_benchmark("demo")
    plan = plan_scorers(bench, EvalConfig())
    scorers = []
    for spec, on, prefix in plan:
        args = dict(spec.args)
        if spec.name == "asr" and any(p[0].name == "prosody" for p in plan):
            args["word_timestamps"] = True
        scorer = build(spec.name, **args)
        if hasattr(scorer, "prepare"):
            scorer.prepare()
        scorers.append((spec, on, prefix, scorer))
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    elapsed, agree, compared = 0.0, 0, 0
    for row in rows:
        if row.get("response.error"):
            continue
        audio = load_audio(out / row["response.audio"]) if row.get("response.audio") else None
        sample = Sample(id=row["id"], audio=audio.samples if audio else None,
                        sample_rate=audio.sample_rate if audio else None, text=row["response.text"],
                        prompt=row["prompt"], reference=row["reference"],
                        meta={**(row.get("meta") or {}), **({"style": row["style"]} if row.get("style") else {})})
        fields = {**(row.get("meta") or {}), "id": row["id"], "style": row.get("style"),
                  "reference": row.get("reference")}
        for spec, on, prefix, scorer in scorers:
            if not matches(spec.where, fields):
                continue
            view = sample
            if on == "transcript" or (on == "auto" and sample.text is None):
                view = replace(sample, text=row.get("asr.transcript"))
            tick = time.perf_counter()
            (score,) = score_each(scorer, [view])
            elapsed += time.perf_counter() - tick
            if isinstance(score.metrics.get("words"), list):
                sample = replace(sample, meta={**sample.meta, "words": score.metrics["words"]})
            compared += 1
            agree += _same(score.value, row.get(f"{prefix}.value"))
    return elapsed, agree, compared


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= 1e-6 * max(1.0, abs(a))


if __name__ == "__main__":
    main()
