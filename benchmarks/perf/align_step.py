"""Seconds per optimizer step and peak memory: wavalign's align loop vs TRL's GRPOTrainer, same model, prompts, G,
max tokens, sampling and text-only GRPO; wavalign also computes its SFT term (mode wavalign).

    pip install trl==1.16.0 --no-deps      # for this benchmark only
    python benchmarks/perf/align_step.py [--steps 6] [--device cpu|cuda] [--random-init DIR] [--threads N]
                                         [--set KEY=VALUE ...]     # wavalign config overrides, e.g. kl_every=1
    python benchmarks/perf/align_step.py --family omni|moshi|interleaved [--steps 4] [--device cpu|cuda]

``--family``: wavalign's loop alone (TRL cannot train these layouts) on a random-initialised model of the family's
real class at the public checkpoint's shape (Qwen2.5-Omni-3B, Moshi 7B, GLM-4-Voice-9B; bfloat16) on a GPU, or at
a reduced shape of the same structure on a CPU (it says which): seconds per step with the time spent generating,
scoring, and in the rest (log-probs, backward, optimizer), and peak memory.

``--random-init DIR``: both sides use a random-initialised model of SmolLM2-135M's exact shape (config and tokenizer
saved in DIR by ``--save-shape DIR`` on a machine with the packaged GGUF), for machines without the weights (the
GPU machine: the 98 MB GGUF cannot travel). Step time depends on the shape, not the weights, except through answer
lengths; a random model never ends early, so both sides generate the full 64 tokens.

Model: SmolLM2-135M-Instruct (the packaged GGUF, dequantised into a plain model; wavalign's copy has the Piper
phoneme speech tokens added, the reference policy). Both sides: 2 prompts × G = 4 rollouts per step,
≤ 64 new tokens, temperature 0.7, top-p 0.9, no KL, one update per generation, lr 1e-6, the same cheap text reward
(word overlap F1 with the reference answer) so the figure is the loops' cost, not the scorers'. Each side runs in
its own process (peak memory: max RSS on CPU, torch.cuda.max_memory_allocated on GPU); the first step is warm-up
and not counted. Both sides run with the same number of torch CPU threads (``--threads``; 0: torch's default, all
cores). Prints the figures, the ratio wavalign / TRL, and wavalign's time breakdown per step (median over the
counted steps of the loop's own log columns ``t_gen``, ``t_decode``, ``t_score_<scorer>``, ``t_logp``, ``t_kl``,
``t_backward``, ``t_opt``; the rest of ``seconds`` is the loop's glue). ``t_kl`` is the forward pass of the starting
policy that measures KL per channel: every ``kl_every`` steps (default 10) and at the last step while β = 0, so its
cost shows in the mean, not in the median.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PROMPTS = REPO / "benchmarks" / "align" / "train.jsonl"


def overlap_f1(text: str, reference: str) -> float:
    a, b = re.findall(r"[a-z0-9]+", text.lower()), re.findall(r"[a-z0-9]+", reference.lower())
    if not a or not b:
        return 0.0
    common = sum(min(a.count(w), b.count(w)) for w in set(a))
    if not common:
        return 0.0
    p, r = common / len(a), common / len(b)
    return 2 * p * r / (p + r)


class OverlapScorer:
    """The benchmark's reward as a wavalign scorer (text channel vs reference)."""

    name, version, higher_is_better = "overlap", "1", True
    requires = frozenset({"text", "reference"})

    def score(self, samples):
        from rewards.base import Score

        return [Score(value=overlap_f1(s.text, s.reference)) for s in samples]

    def info(self):
        from rewards.base import ScorerInfo

        return ScorerInfo(self.name, self.version, True, self.requires, {})


def _peak_mb(device: str) -> float:
    import resource

    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save_shape(folder: str) -> None:
    from align.interleaved.reference import load_plain_smollm2

    model, tokenizer = load_plain_smollm2()
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def random_model(folder: str):
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(AutoConfig.from_pretrained(folder)), AutoTokenizer.from_pretrained(folder)


def random_policy(shape: str, text_chunk: int = 4, speech_chunk: int = 12):
    """The wavalign side with --random-init: the same shape, 154 speech tokens like the reference policy."""
    from align.interleaved import InterleavedPolicy, extend_vocab
    from align.interleaved.tiny import ToneCodec

    model, tokenizer = random_model(shape)
    codec = ToneCodec(vocab_size=154)
    spec = extend_vocab(model, tokenizer, codec.vocab_size, text_chunk=text_chunk, speech_chunk=speech_chunk)
    return InterleavedPolicy(model, tokenizer, spec, codec)


def run_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    if args.random_init:
        model, tokenizer = random_model(args.random_init)
    else:
        from align.interleaved.reference import load_plain_smollm2

        model, tokenizer = load_plain_smollm2()
    rows = [json.loads(line) for line in PROMPTS.read_text().splitlines()][: 2 * (args.steps + 1)]
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question_text"]}],
                               "reference": r["sft_target_text"]} for r in rows])

    def reward(completions, reference, **_):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [overlap_f1(t, ref) for t, ref in zip(texts, reference)]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            times.append(time.perf_counter() - self.t)

    config = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=8, num_generations=4,
                        max_completion_length=64, temperature=0.7, top_p=0.9, top_k=0, beta=0.0, learning_rate=1e-6,
                        max_steps=args.steps, logging_steps=1, report_to="none", save_strategy="no",
                        use_cpu=args.device == "cpu", bf16=args.device == "cuda", gradient_accumulation_steps=1,
                        steps_per_generation=1, seed=0, disable_dropout=True, dataloader_num_workers=0)
    if args.threads:
        torch.set_num_threads(args.threads)
    trainer = GRPOTrainer(model=model.to(args.device), reward_funcs=reward, args=config, train_dataset=data,
                          processing_class=tokenizer, callbacks=[Clock()])
    torch.manual_seed(0)
    trainer.train()
    lengths = [e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e]
    return {"side": "trl", "step_seconds": times, "peak_mb": _peak_mb(args.device), "threads": torch.get_num_threads(),
            "len_completion": statistics.mean(lengths[1:] or lengths) if lengths else None}


FAMILIES = {  # --family: the factory of a random model at the real (GPU) or reduced (CPU) shape
    "omni": "align.omni:build_random_omni_policy",
    "moshi": "align.moshi:build_random_moshi_policy",
    "interleaved": "align.interleaved.native:build_random_native_policy",
}


def run_family(args) -> dict:
    import csv

    from align.train import load_config, train
    from rewards.registry import register

    register("overlap", "benchmarks.perf.align_step:OverlapScorer")
    out = Path(tempfile.mkdtemp())
    shape = "real" if args.device == "cuda" else "reduced"
    dtype = "bfloat16" if args.device == "cuda" else "float32"
    config = load_config(None, {
        "policy": FAMILIES[args.family], "policy_args": {"shape": shape, "dtype": dtype, "device": args.device},
        "mode": "wavalign", "max_steps": args.steps, "output_dir": str(out), "group_size": 4, "prompts_per_step": 2,
        "max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9, "lr": 1e-6, "save_every": 10**6,
        "reward": {"components": [{"scorer": "overlap", "weight": 1.0}]}, "reward_range": (0.0, 1.0),
        "device": args.device, "data": str(PROMPTS), "micro_batch_size": 4,
    })
    train(config, log=lambda m: None)
    with (out / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    counted = rows[1:] or rows
    return {"side": args.family, "shape": shape, "dtype": dtype, "step_seconds": [float(r["seconds"]) for r in rows],
            "generate": statistics.median(float(r["seconds_generate"]) for r in counted),
            "score": statistics.median(float(r["seconds_score"]) for r in counted),
            "len_text": statistics.mean(float(r["len_text"]) for r in counted),
            "len_speech": statistics.mean(float(r["len_speech"]) for r in counted),
            "peak_mb": _peak_mb(args.device)}


def report_family(args) -> None:
    done = subprocess.run([sys.executable, __file__, "--side", "family", "--family", args.family, "--steps",
                           str(args.steps), "--device", args.device], cwd=REPO, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{args.family} failed:\n{done.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    device = args.device
    if device == "cuda":
        import torch

        device = torch.cuda.get_device_name(0)
    steps = r["step_seconds"][1:] or r["step_seconds"]
    step = statistics.median(steps)
    shape = {"omni": "Qwen2.5-Omni-3B", "moshi": "Moshi 7B", "interleaved": "GLM-4-Voice-9B"}[args.family]
    what = f"{shape}'s shape" if r["shape"] == "real" else f"a reduced shape of {shape}'s structure"
    print(f"align step, family {args.family} ({device}): random weights at {what}, {r['dtype']}, 2 prompts x G=4, "
          f"<=64 text tokens, {args.steps} steps, first one not counted")
    print(f"  {step:.2f} s/step (median): generating {r['generate']:.2f} s, scoring {r['score']:.2f} s, "
          f"log-probs + backward + optimizer {step - r['generate'] - r['score']:.2f} s; "
          f"{r['len_text']:.0f} text and {r['len_speech']:.0f} speech positions per rollout; "
          f"peak memory {r['peak_mb']:.0f} MB")


BREAKDOWN = ("t_gen", "t_decode", "t_score", "t_logp", "t_kl", "t_backward", "t_opt")


def breakdown(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Median and mean per step of each part of the step (the loop's ``t_*`` log columns) and of the glue."""
    def number(r, key):
        return float(r[key]) if r.get(key) not in (None, "") else 0.0

    keys = [k for k in BREAKDOWN if k in rows[0]]
    keys += sorted(k for k in rows[0] if k.startswith("t_score_"))
    out = {}
    for key in [*keys, "glue", "seconds"]:
        if key == "glue":
            values = [number(r, "seconds") - sum(number(r, k) for k in BREAKDOWN) for r in rows]
        else:
            values = [number(r, key) for r in rows]
        out[key] = {"median": statistics.median(values), "mean": statistics.mean(values)}
    return out


def run_wavalign(args) -> dict:
    import csv

    import torch
    import yaml

    from align.train import load_config, train
    from rewards.registry import register

    register("overlap", "benchmarks.perf.align_step:OverlapScorer")
    out = Path(tempfile.mkdtemp())
    policy = ({"policy": "benchmarks.perf.align_step:random_policy", "policy_args": {"shape": args.random_init}}
              if args.random_init else {})
    overrides = {key: yaml.safe_load(value) for key, _, value in (kv.partition("=") for kv in args.set or [])}
    config = load_config("reference", {**policy,
        "mode": "wavalign", "max_steps": args.steps, "output_dir": str(out), "group_size": 4, "prompts_per_step": 2,
        "max_new_tokens": 64, "temperature": 0.7, "top_p": 0.9, "lr": 1e-6, "beta_text": 0.0, "beta_speech": 0.0,
        "reward": {"components": [{"scorer": "overlap", "weight": 1.0}]}, "reward_range": (0.0, 1.0),
        "save_every": 10**6, "device": args.device, "data": str(PROMPTS), "lora": None, "threads": args.threads,
        **overrides,
    })
    train(config, log=lambda m: None)
    with (out / "log.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {"side": "wavalign", "step_seconds": [float(r["seconds"]) for r in rows], "peak_mb": _peak_mb(args.device),
            "threads": torch.get_num_threads(), "kl_every": config.kl_every,
            "breakdown": breakdown(rows[1:] or rows), "len_text": statistics.mean(float(r["len_text"]) for r in rows),
            "len_speech": statistics.mean(float(r["len_speech"]) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-init", metavar="DIR", help="random weights of the shape saved in DIR")
    parser.add_argument("--save-shape", metavar="DIR", help="save SmolLM2's config and tokenizer to DIR and exit")
    parser.add_argument("--family", choices=sorted(FAMILIES), help="one family's loop at its real/reduced shape")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads on both sides (0: torch's default)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a wavalign config override (repeatable)")
    parser.add_argument("--side", choices=["trl", "wavalign", "family"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.save_shape:
        save_shape(args.save_shape)
        return
    if args.side:
        result = {"trl": run_trl, "wavalign": run_wavalign, "family": run_family}[args.side](args)
        print("RESULT " + json.dumps(result))
        return
    if args.family:
        report_family(args)
        return
    results = {}
    for side in ("trl", "wavalign"):
        extra = ["--random-init", args.random_init] if args.random_init else []
        extra += [f"--set={kv}" for kv in args.set or []] if side == "wavalign" else []
        done = subprocess.run([sys.executable, __file__, "--side", side, "--steps", str(args.steps), "--device",
                               args.device, "--threads", str(args.threads), *extra], cwd=REPO, capture_output=True,
                              text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            sys.exit(f"{side} failed:\n{done.stderr[-3000:]}")
        results[side] = json.loads(line[len("RESULT "):])
    device = args.device
    if device == "cuda":
        import torch

        device = torch.cuda.get_device_name(0)
    weights = "random weights of its shape" if args.random_init else "packaged weights"
    print(f"align step benchmark ({device}): SmolLM2-135M-Instruct ({weights}), 2 prompts x G=4, <=64 new tokens, "
          f"{args.steps} steps, first one not counted")
    for side, r in results.items():
        steps = r["step_seconds"][1:] or r["step_seconds"]
        print(f"  {side:<9} {statistics.median(steps):6.2f} s/step (median; mean {statistics.mean(steps):.2f}), "
              f"peak memory {r['peak_mb']:.0f} MB, {r['threads']} torch threads")
    t = statistics.median(results["wavalign"]["step_seconds"][1:]) / statistics.median(
        results["trl"]["step_seconds"][1:])
    t_mean = statistics.mean(results["wavalign"]["step_seconds"][1:]) / statistics.mean(
        results["trl"]["step_seconds"][1:])
    m = results["wavalign"]["peak_mb"] / results["trl"]["peak_mb"]
    print(f"  ratio wavalign / TRL: time {t:.2f} (of means {t_mean:.2f}), peak memory {m:.2f} (target time <= 1.0; "
          "wavalign also computes the SFT term and speech tokens)")
    w, trl_len = results["wavalign"], results["trl"].get("len_completion")
    print(f"  wavalign's step, median (mean) seconds; kl_every {w['kl_every']}; {w['len_text']:.0f} text and "
          f"{w['len_speech']:.0f} speech positions per rollout (TRL's: "
          f"{'?' if trl_len is None else f'{trl_len:.0f}'} tokens):")
    for key, v in w["breakdown"].items():
        print(f"    {key:<22} {v['median']:7.2f} ({v['mean']:.2f})")


if __name__ == "__main__":
    main()
