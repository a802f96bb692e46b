"""The replication experiment: every align mode on the reference model, same budget, scored before and after.

    python benchmarks/replication/run.py [--out runs/replication] [--config replication] [--steps 10]
        [--seeds 0 1 2] [--jobs 2] [--warmstart CKPT | --warmstart-steps 60]
        [--modes wavalign fixed po-all po-text sft] [--set KEY=VALUE]

1. SFT warm start (unless ``--warmstart`` gives one): ``wavalign align --config CONFIG --mode sft`` without
   rollouts, so the model answers in both channels;
2. from the warm start, each mode and seed for ``--steps`` optimizer steps (per seed: the same prompts per step, G,
   tokens and lr in every mode);
3. the held-out prompts (``wavalign eval --benchmark align-heldout``, greedy) for the warm start and every run;
4. statistics (`mode_stats`, `paired`, `decide`): each mode's mean ± standard error across seeds; for each mode
   against ``wavalign``, the paired difference (same items, same seed) with a 95% interval across seeds; and the
   outcome of each comparison fixed in advance in `COMPARISONS` (docs/replication.md states the same rule);
5. ``OUT/summary.md`` (the tables and outcomes), ``OUT/summary.json`` and ``OUT/curves.png`` (training reward, λ,
   the fraction of zero-variance groups and the speech channel's KL per mode). docs/replication.md quotes them.

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
HIGHER = {key: higher for key, _, higher in COLUMNS}
HEADER = {key: head for key, head, _ in COLUMNS}
# per-item value of each metric in an evaluation's samples.jsonl: (column, scale); see `item_values`
ITEM_COLUMNS = {"iq_text": ("iq_text.value", 100.0), "iq_speech_all": ("iq_speech.value", 100.0),
                "asr_wer": ("asr.wer_consistency", 100.0), "mos": ("quality.dnsmos_ovrl", 1.0),
                "expressiveness": ("prosody.expressiveness", 100.0), "style_match": ("prosody.style_match", 100.0)}
# The comparisons and the decision rule, fixed before the run (docs/replication.md, "Decision rule"): each is
# `wavalign` against another mode on one held-out metric, as the paper claims (the hybrid is better). Oriented so
# that a positive difference means `wavalign` is better; its 95% interval across seeds decides:
# reproduced (the interval is above 0), contradicted (below 0) or undecided (it contains 0).
COMPARISONS = (
    ("claim A: full-token PO damages the speech, the hybrid keeps it", "po-all", ("asr_wer", "expressiveness",
                                                                                  "iq_speech_all")),
    ("claim B: the hybrid answers better than SFT", "sft", ("iq_text", "iq_speech_all", "expressiveness")),
    ("claim C: the adaptive λ beats a fixed mix", "fixed", ("iq_speech_all", "expressiveness")),
    ("claim D: masking speech out of GRPO needs the SFT anchor", "po-text", ("asr_wer",)),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "replication")
    parser.add_argument("--config", default="replication",
                        help="align config (replication; tiny for a smoke run)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per mode (the budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="trainings/evaluations at once")
    parser.add_argument("--warmstart", type=Path, help="an SFT warm start's checkpoint/trainer.pt (default: train one)")
    parser.add_argument("--warmstart-steps", type=int, default=60)
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
    (out / "summary.md").write_text(report(summary) + "\n")
    plot(out, runs)
    print(report(summary))
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
    from align.train import load_config

    done = finished_steps(run)
    if done < steps:
        sets = ["threads=1", "save_every=5", *overrides]
        if load_config(config).policy == "reference":  # the reference policy loads its warm start itself
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


def item_values(run: Path) -> dict[str, dict[str, float]]:
    """Per-item values of one evaluation: {metric: {item id: value}}, on the table's scale (0–100, DNSMOS 1–5).

    An item the scorer could not score is absent from that metric, except ``iq_speech_all``: an answer whose speech
    has no recognisable words counts as 0 (the judge itself leaves it None: nothing to judge), so a model cannot
    gain by babbling. ``finished`` is 100 for an answer that ended (EOS) within the token budget, else 0.
    """
    values: dict[str, dict[str, float]] = {key: {} for key, _, _ in COLUMNS}
    for line in (run / "samples.jsonl").open(encoding="utf-8"):
        sample = json.loads(line)
        item = str(sample["id"])
        for key, (column, scale) in ITEM_COLUMNS.items():
            value = sample.get(column)
            if value is None and key == "iq_speech_all":
                value = 0.0
            if isinstance(value, (int, float)) and math.isfinite(value):
                values[key][item] = scale * float(value)
        values["finished"][item] = 100.0 if (sample.get("response.meta") or {}).get("finished") else 0.0
    return values


def held_out(run: Path) -> dict[str, float | None]:
    """The held-out metrics of one evaluation: the mean of `item_values` per metric, and ``n`` (items)."""
    values = item_values(run)
    row: dict[str, float | None] = {key: _mean(list(v.values())) for key, v in values.items()}
    row["n"] = len(values["finished"])
    return row


def training(run: Path) -> dict[str, float | None]:
    """Training reward at the first and the last steps (mean of up to 3), and the means over all steps of λ, its
    gates, the within-group reward variance on the judge's 1–5 scale and the fraction of zero-variance groups."""
    with (run / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))

    def mean(key: str, part: list[dict]) -> float | None:
        return _mean([float(r[key]) for r in part if r.get(key) not in (None, "", "nan")])

    return {"reward_first": mean("reward_mean", rows[:3]), "reward_last": mean("reward_mean", rows[-3:]),
            "lambda_mean": mean("lambda", rows), "gate_v": mean("gate_v", rows), "gate_g": mean("gate_g", rows),
            "group_var": mean("reward_group_var", rows), "frac_zero_var": mean("frac_zero_var", rows),
            "reward_none": mean("reward_none", rows), "kl_speech_last": mean("kl_speech", rows[-3:]),
            "kl_text_last": mean("kl_text", rows[-3:]), "seconds_per_step": mean("seconds", rows),
            "steps": len(rows)}


def mode_stats(per_seed: list[float | None]) -> dict[str, float | int | None]:
    """Mean ± standard error across seeds of one mode's per-seed values (sd with n − 1 / √n; None below 2)."""
    nums = [float(v) for v in per_seed if v is not None and math.isfinite(v)]
    if not nums:
        return {"mean": None, "se": None, "n": 0}
    se = statistics.stdev(nums) / math.sqrt(len(nums)) if len(nums) > 1 else None
    return {"mean": statistics.fmean(nums), "se": se, "n": len(nums)}


def paired(other: dict[int, dict[str, float]], base: dict[int, dict[str, float]], higher_is_better: bool,
           level: float = 0.95) -> dict[str, object]:
    """The paired difference ``base − other`` of one metric, oriented so that > 0 means ``base`` is better.

    ``other`` and ``base``: {seed: {item id: value}}. Per seed s, over the items both runs scored,
    D_s = mean_i (x_base − x_other) (negated for a lower-is-better metric). The estimate is the mean of D_s over
    the seeds, and its interval is D̄ ± t(level, S − 1) · sd(D_s) / √S: the seeds are the replicates (each is a
    training run), the items are paired within a seed. ``se_items`` is the standard error over items of the
    per-item difference averaged over seeds: how much the 40 items alone would let the estimate move.
    """
    from scipy.stats import t as student_t

    sign = 1.0 if higher_is_better else -1.0
    per_seed: dict[int, float] = {}
    per_item: dict[str, list[float]] = {}
    for seed in sorted(set(other) & set(base)):
        common = sorted(set(other[seed]) & set(base[seed]))
        if not common:
            continue
        diffs = [sign * (base[seed][i] - other[seed][i]) for i in common]
        per_seed[seed] = statistics.fmean(diffs)
        for i, d in zip(common, diffs):
            per_item.setdefault(i, []).append(d)
    out: dict[str, object] = {"per_seed": per_seed, "seeds": len(per_seed), "items": len(per_item),
                              "diff": None, "se": None, "low": None, "high": None, "se_items": None}
    if not per_seed:
        return out
    d = list(per_seed.values())
    out["diff"] = statistics.fmean(d)
    if len(d) > 1:
        se = statistics.stdev(d) / math.sqrt(len(d))
        half = float(student_t.ppf(0.5 + level / 2, len(d) - 1)) * se
        out.update(se=se, low=out["diff"] - half, high=out["diff"] + half)
    item_means = [statistics.fmean(v) for v in per_item.values()]
    if len(item_means) > 1:
        out["se_items"] = statistics.stdev(item_means) / math.sqrt(len(item_means))
    return out


def decide(interval: dict[str, object]) -> str:
    """reproduced (the interval lies above 0: `wavalign` better), contradicted (below 0), else undecided."""
    low, high = interval.get("low"), interval.get("high")
    if low is None or high is None:
        return "undecided (fewer than 2 seeds)"
    return "reproduced" if low > 0 else "contradicted" if high < 0 else "undecided"


def claim_outcome(outcomes: list[str]) -> str:
    """A claim is contradicted when any of its comparisons is, reproduced when all are, else not decided."""
    if any(o == "contradicted" for o in outcomes):
        return "contradicted"
    return "reproduced" if outcomes and all(o == "reproduced" for o in outcomes) else "not decided"


def summarize(out: Path, runs: dict[str, tuple[str, int]], args: argparse.Namespace) -> dict:
    """Rows (per mode: each metric's mean ± se across seeds, training statistics), paired comparisons, claims."""
    before = held_out(out / "eval" / "warmstart")
    rows: dict[str, dict] = {"warm start (before)": {k: {"mean": v, "se": None, "n": 1} for k, v in before.items()}}
    items: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    for mode in args.modes:
        seeds = {seed: name for name, (m, seed) in runs.items() if m == mode}
        items[mode] = {seed: item_values(out / "eval" / name) for seed, name in seeds.items()}
        per_seed = {seed: {**held_out(out / "eval" / name), **training(out / "train" / name)}
                    for seed, name in seeds.items()}
        keys = sorted({k for r in per_seed.values() for k in r})
        rows[mode] = {k: mode_stats([r.get(k) for r in per_seed.values()]) for k in keys}
        rows[mode]["per_seed"] = per_seed
    comparisons, claims = [], []
    for claim, other, metrics in COMPARISONS:
        if "wavalign" not in items or other not in items:
            continue
        outcomes = []
        for metric in metrics:
            interval = paired({s: v[metric] for s, v in items[other].items()},
                              {s: v[metric] for s, v in items["wavalign"].items()}, HIGHER[metric])
            outcome = decide(interval)
            outcomes.append(outcome)
            comparisons.append({"claim": claim, "against": other, "metric": metric, **interval, "outcome": outcome})
        claims.append({"claim": claim, "outcome": claim_outcome(outcomes)})
    return {"settings": {"config": args.config, "steps": args.steps, "seeds": args.seeds,
                         "overrides": args.overrides, "limit": args.limit},
            "rows": rows, "comparisons": comparisons, "claims": claims}


def _mean(values: list) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.fmean(nums) if nums else None


def report(summary: dict) -> str:
    """summary.md: the held-out table (mean ± se across seeds), training statistics, comparisons, claims."""
    head = ["", *[h for _, h, _ in COLUMNS]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in summary["rows"].items():
        lines.append("| " + " | ".join([name] + [_pm(row.get(k)) for k, _, _ in COLUMNS]) + " |")
    train = [("reward_first", "train reward first", 3), ("reward_last", "last", 3), ("lambda_mean", "λ mean", 3),
             ("gate_v", "gate v", 3), ("gate_g", "gate g", 3), ("group_var", "group var (1–5)", 3),
             ("frac_zero_var", "zero-var groups", 3), ("kl_speech_last", "KL speech", 4),
             ("seconds_per_step", "s/step", 1)]
    lines += ["", "| mode | " + " | ".join(h for _, h, _ in train) + " |", "|" + "---|" * (len(train) + 1)]
    for name, row in summary["rows"].items():
        if "reward_last" in row:
            lines.append("| " + " | ".join([name] + [_pm(row.get(k), d) for k, _, d in train]) + " |")
    if summary["comparisons"]:
        lines += ["", "| comparison | metric | wavalign better by | 95% interval | se (items) | outcome |",
                  "|---|---|---|---|---|---|"]
        for c in summary["comparisons"]:
            interval = "–" if c["low"] is None else f"[{c['low']:.2f}, {c['high']:.2f}]"
            lines.append(f"| wavalign vs {c['against']} | {HEADER[c['metric']]} | {_fmt(c['diff'], 2)} | {interval} "
                         f"| {_fmt(c['se_items'], 2)} | {c['outcome']} |")
        lines += [""] + [f"- {c['claim']}: **{c['outcome']}**" for c in summary["claims"]]
    return "\n".join(lines)


def _pm(stat: dict | None, digits: int = 1) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    se = stat.get("se")
    return _fmt(stat["mean"], digits) + ("" if se is None else f" ± {se:.{digits}f}")


def _fmt(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def plot(out: Path, runs: dict[str, tuple[str, int]]) -> None:
    """curves.png: per mode, the mean over its seeds of each step's training reward, λ, fraction of zero-variance
    groups and speech-channel KL (measured every ``kl_every`` steps: markers)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(16, 3.8))
    FigureCanvasAgg(fig)
    panels = [("training reward (mean of the rollouts)", "reward_mean"), ("λ (weight of the GRPO term)", "lambda"),
              ("fraction of zero-variance groups", "frac_zero_var"),
              ("KL to the warm start, speech channel", "kl_speech")]
    axes = [fig.add_subplot(1, len(panels), i + 1) for i in range(len(panels))]
    for mode in dict.fromkeys(m for m, _ in runs.values()):
        curves: dict[str, dict[int, list[float]]] = {key: {} for _, key in panels}
        for name in (n for n, (m, _) in runs.items() if m == mode):
            with (out / "train" / name / "log.csv").open(newline="") as f:
                for r in csv.DictReader(f):
                    for _, key in panels:
                        if r.get(key) not in (None, "", "nan"):
                            curves[key].setdefault(int(r["step"]), []).append(float(r[key]))
        for ax, (title, key) in zip(axes, panels):
            steps = sorted(curves[key])
            ax.plot(steps, [statistics.fmean(curves[key][s]) for s in steps], marker="o", markersize=3, label=mode)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(str(out / "curves.png"), dpi=110)


if __name__ == "__main__":
    main()
