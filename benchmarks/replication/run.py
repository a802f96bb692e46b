"""The replication experiment: every align mode on the reference model, same budget, scored before and after.

    python benchmarks/replication/run.py [--out runs/replication] [--steps 10] [--seeds 0] [--jobs 2]
        [--warmstart CKPT | --warmstart-steps 160] [--modes wavalign fixed po-all po-text sft] [--set KEY=VALUE]

1. SFT warm start (unless ``--warmstart`` gives one): ``wavalign align --config reference --mode sft`` without
   rollouts, so the model answers in both channels;
2. from the warm start, each mode for ``--steps`` optimizer steps (same prompts per step, G, tokens, lr and seed);
3. the held-out prompts (``wavalign eval --benchmark align-heldout``, greedy) for the warm start and every run;
4. ``OUT/summary.md`` (the table), ``OUT/summary.json`` and ``OUT/curves.png`` (training reward, λ and the speech
   channel's KL per mode). docs/replication.md quotes them.

Every stage is a subprocess of the CLI (what a user would run), skipped when its output is already complete, so a
killed experiment continues where it stopped. ``--jobs`` runs that many trainings/evaluations at once (each with
one torch thread).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODES = ("wavalign", "fixed", "po-all", "po-text", "sft")
# held-out columns in the table: (metric in results.json, header, higher is better)
COLUMNS = (("iq_text", "IQ text", True), ("iq_speech_all", "IQ speech", True), ("asr_wer", "ASR-WER %", False),
           ("mos", "DNSMOS", True), ("expressiveness", "expressive", True), ("style_match", "style", True),
           ("finished", "ended %", True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "replication")
    parser.add_argument("--config", default="reference", help="align config (reference; tiny for a smoke run)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per mode (the budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2, help="trainings/evaluations at once")
    parser.add_argument("--warmstart", type=Path, help="an SFT warm start's checkpoint/trainer.pt (default: train one)")
    parser.add_argument("--warmstart-steps", type=int, default=100)
    parser.add_argument("--limit", type=int, help="held-out items (default: all 40)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="align config overrides for the mode runs (repeatable)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    warm = (args.warmstart.resolve() if args.warmstart
            else warm_start(args.config, out / "warmstart", args.warmstart_steps))
    model_args = policy_model_args(args.config)
    runs = {f"{mode}-s{seed}": (mode, seed) for seed in args.seeds for mode in args.modes}
    with ThreadPoolExecutor(args.jobs) as pool:
        evals = [pool.submit(evaluate, out / "eval" / "warmstart", warm, model_args, args.limit)]
        trained = {name: pool.submit(train, args.config, out / "train" / name, mode, seed, warm, args.steps,
                                     args.overrides) for name, (mode, seed) in runs.items()}
        evals += [pool.submit(lambda n=name: evaluate(out / "eval" / n, trained[n].result(), model_args, args.limit))
                  for name in runs]
        for job in evals:
            job.result()
    summary = summarize(out, runs, args)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(table(summary) + "\n")
    plot(out, runs)
    print(table(summary))
    print(f"wrote {out / 'summary.md'}, summary.json, curves.png")


# -- stages ---------------------------------------------------------------------------------------------------------


def cli(args: list[str], log: Path) -> None:
    """Run ``wavalign ARGS`` (one torch thread), its output into ``log``; a failure stops the experiment."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    log.parent.mkdir(parents=True, exist_ok=True)
    tick = time.perf_counter()
    print(f"$ wavalign {' '.join(args)}", flush=True)
    with log.open("w") as f:
        done = subprocess.run([sys.executable, "-m", "cli", *args], cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                              env=env)
    if done.returncode not in (0, 1):  # eval exits 1 when some items failed: recorded, not fatal
        sys.exit(f"wavalign {args[0]} failed ({done.returncode}); see {log}")
    print(f"  done in {time.perf_counter() - tick:.0f} s: {log}", flush=True)


def finished_steps(run: Path) -> int:
    """Steps in a run's saved checkpoint (0: none)."""
    ckpt = run / "checkpoint" / "trainer.pt"
    log = run / "log.csv"
    if not (ckpt.exists() and log.exists()):
        return 0
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return int(rows[-1]["step"]) if rows else 0


def policy_model_args(config: str) -> list[str]:
    """``--model-arg`` flags that rebuild the config's policy in `align.adapter.PolicyAdapter`."""
    from align.train import load_config

    cfg = load_config(config)
    pairs = {"policy": cfg.policy, **({"data": cfg.data} if cfg.data else {}), **cfg.policy_args}
    flags = []
    for key, value in pairs.items():
        flags += ["--model-arg", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return flags


def warm_start(config: str, run: Path, steps: int) -> Path:
    """SFT on the training prompts' reference answers, without rollouts (the recipe in configs/reference.yaml)."""
    done = finished_steps(run)
    if done < steps:
        cli(["align", "--config", config, "--mode", "sft", "--max-steps", str(steps), "--output-dir", str(run),
             "--set", "sft_rollouts=false", "--set", "lr=2e-4", "--set", "warmup_steps=8",
             "--set", "prompts_per_step=8", "--set", "micro_batch_size=8", "--set", "save_every=20",
             "--set", "threads=2"] + (["--resume"] if done else []), run.with_suffix(".log"))
    return run / "checkpoint" / "trainer.pt"


def train(config: str, run: Path, mode: str, seed: int, warm: Path, steps: int, overrides: list[str]) -> Path:
    done = finished_steps(run)
    if done < steps:
        sets = ["threads=1", "save_every=5", *overrides]
        if config == "reference":  # the reference policy loads its warm start itself; others from the weights
            sets.insert(0, f"policy_args={{checkpoint: {warm}}}")
        else:
            sets.insert(0, f"init_weights={warm}")
        cli(["align", "--config", config, "--mode", mode, "--seed", str(seed), "--max-steps", str(steps),
             "--output-dir", str(run), *[a for s in sets for a in ("--set", s)]] + (["--resume"] if done else []),
            run.with_suffix(".log"))
    return run / "checkpoint" / "trainer.pt"


def evaluate(run: Path, checkpoint: Path, model_args: list[str], limit: int | None) -> Path:
    if (run / "results.json").exists() and json.loads((run / "results.json").read_text()).get("complete"):
        return run
    limit_flags = ["--limit", str(limit)] if limit else []
    cli(["eval", "--benchmark", "align-heldout", "--model", "policy", "--model-arg", f"checkpoint={checkpoint}",
         *model_args, "--model-arg", "threads=1", "--model-name", run.name, "-o", str(run), "--no-progress",
         "--no-leaderboard", "--resume" if run.exists() else "--overwrite", *limit_flags], run.with_suffix(".log"))
    return run


# -- summary ----------------------------------------------------------------------------------------------------------


def held_out(run: Path) -> dict[str, float | None]:
    """The held-out metrics of one evaluation, plus two read from its samples.

    ``iq_speech_all`` counts an answer whose speech has no recognisable words as 0 (the judge itself leaves it
    None: nothing to judge), so a model cannot gain by babbling; ``finished`` is the % of answers that ended
    (EOS) within the token budget.
    """
    results = json.loads((run / "results.json").read_text())
    row = {name: m.get("value") for name, m in results["metrics"].items()}
    samples = [json.loads(line) for line in (run / "samples.jsonl").open()]
    speech = [s.get("iq_speech.value") if s.get("iq_speech.value") is not None else 0.0 for s in samples]
    row["iq_speech_all"] = 100 * statistics.fmean(speech) if speech else None
    ended = [bool((s.get("response.meta") or {}).get("finished")) for s in samples]
    row["finished"] = 100 * statistics.fmean(ended) if ended else None
    row["n"] = len(samples)
    return row


def training(run: Path) -> dict[str, float | None]:
    """Training reward at the first and the last steps (mean of up to 3), and the mean λ."""
    with (run / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    def mean(key: str, part: list[dict]) -> float | None:
        vals = [float(r[key]) for r in part if r.get(key) not in (None, "")]
        return statistics.fmean(vals) if vals else None

    return {"reward_first": mean("reward_mean", rows[:3]), "reward_last": mean("reward_mean", rows[-3:]),
            "lambda_mean": mean("lambda", rows), "kl_speech_last": mean("kl_speech", rows[-3:]),
            "kl_text_last": mean("kl_text", rows[-3:]), "seconds_per_step": mean("seconds", rows),
            "steps": len(rows)}


def summarize(out: Path, runs: dict[str, tuple[str, int]], args: argparse.Namespace) -> dict:
    before = held_out(out / "eval" / "warmstart")
    rows = {"warm start (before)": {**before, "runs": 1}}
    for mode in args.modes:
        names = [n for n, (m, _) in runs.items() if m == mode]
        per_seed = [{**held_out(out / "eval" / n), **training(out / "train" / n)} for n in names]
        keys = {k for r in per_seed for k in r}
        rows[mode] = {k: _mean([r.get(k) for r in per_seed]) for k in keys} | {"runs": len(per_seed)}
    return {"settings": {"steps": args.steps, "seeds": args.seeds, "overrides": args.overrides,
                         "limit": args.limit}, "rows": rows}


def _mean(values: list) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.fmean(nums) if nums else None


def table(summary: dict) -> str:
    head = ["", *[h for _, h, _ in COLUMNS], "train reward first→last", "λ mean", "KL speech"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in summary["rows"].items():
        cells = [name] + [_fmt(row.get(k)) for k, _, _ in COLUMNS]
        if "reward_last" in row:
            cells += [f"{_fmt(row['reward_first'], 3)} → {_fmt(row['reward_last'], 3)}",
                      _fmt(row.get("lambda_mean"), 3), _fmt(row.get("kl_speech_last"), 4)]
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def plot(out: Path, runs: dict[str, tuple[str, int]]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    FigureCanvasAgg(fig)
    panels = [("training reward (mean of the rollouts)", "reward_mean"), ("λ (weight of the GRPO term)", "lambda"),
              ("KL to the warm start, speech channel", "kl_speech")]
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    for name in runs:
        with (out / "train" / name / "log.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        steps = [int(r["step"]) for r in rows]
        for ax, (title, key) in zip(axes, panels):
            ax.plot(steps, [float(r[key]) if r.get(key) not in (None, "") else math.nan for r in rows], label=name)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(out / "curves.png"), dpi=110)


if __name__ == "__main__":
    main()
