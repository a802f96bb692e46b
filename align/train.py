"""`wavalign align`: the WavAlign adaptive hybrid post-training loop, one readable loop.

Per step: sample prompts → G rollouts each → decode their speech → composite reward → group advantages → λ →
hybrid loss ((1 − λ)·SFT on the reference answers + λ·GRPO on the rollouts' text tokens) → step → log → checkpoint.
Modes (the paper's ablation): ``wavalign`` (adaptive λ), ``fixed`` (constant λ), ``po-all`` (GRPO on every token,
no SFT), ``po-text`` (GRPO on text tokens only, no SFT), ``sft`` (SFT only; rollouts are still generated and scored
for the log, unless ``sft_rollouts: false``: the fast warm start).

Config precedence: dataclass defaults < the YAML (``--config tiny|reference|PATH``) < explicit flags. The resolved
config is written to ``OUTPUT_DIR/config.json`` and into every checkpoint. Checkpoints, config.json and a rewritten
log.csv are written atomically (temporary file, fsync, rename); log rows are appended and fsynced. A resumed run
drops the log rows logged after its checkpoint and a row cut off by a crash (logged, and recorded under ``repairs``
in config.json); a write that fails raises ``evalsuite.results.WriteError`` with the log and last checkpoint intact.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from align.building import first_line
from align.data import Cursor, Example, read_examples
from align.objectives import (
    MODES,
    RL_CHANNELS,
    LambdaController,
    channel_counts,
    check_mode,
    flatten_advantages,
    group_advantages,
    hybrid_loss,
    kl_per_channel,
    loss_positions,
    mode_weights,
    sft_loss,
    sft_weight_total,
)
from align.policy import PAD_CHANNEL, SPEECH, TEXT
from evalsuite.results import WriteError, add_repair, fsync_dir, read_json, write_atomic

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class AlignConfig:
    """Everything a run depends on (saved with every checkpoint)."""

    # -- policy and data
    policy: str = "tiny"  # tiny | reference | package.module:factory (returns a PolicyAdapter)
    policy_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the policy factory
    init_weights: str | None = None  # start from an earlier run's weights (its checkpoint/trainer.pt), any policy
    data: str = ""  # training prompts (JSONL: seed schema or benchmark format); relative to the config file
    # -- algorithm
    mode: str = "wavalign"  # wavalign | fixed | po-all | po-text | sft
    fixed_lambda: float = 0.7  # λ of mode fixed (the paper's fixed RL weight)
    group_size: int = 4  # G rollouts per prompt
    prompts_per_step: int = 2
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 48
    reward: dict[str, Any] = field(default_factory=dict)  # a composite reward config (rewards.composite)
    reward_range: tuple[float, float] = (0.0, 1.0)  # the composite's range, for the λ controller's constants
    lambda_max: float = 0.8
    lambda_ema: float = 0.9
    std_floor: float = 0.0  # floor on the group std (reward units) before dividing
    resample_zero_var: bool = False  # redraw a group whose rewards are all equal, once
    beta_text: float = 0.0  # KL penalties per channel (0: measured only)
    beta_speech: float = 0.0
    # measure KL to the starting policy every N steps and at the last one while it is not in the loss (β = 0): its
    # forward pass over every rollout costs about as much as the policy's own. With β > 0 it is computed every
    # step (it is part of the loss). 1: every step; 0: never (and no frozen copy of the model is kept)
    kl_every: int = 10
    sft_rollouts: bool = True  # mode sft: still generate and score rollouts, for the log (false: a fast warm start)
    # -- optimisation
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_steps: int = 10
    grad_clip: float = 1.0
    micro_batch_size: int = 8  # sequences per forward/backward; gradients accumulate, normalised by token count
    lora: dict[str, Any] | None = None  # peft LoraConfig arguments, e.g. {r: 8, lora_alpha: 16}
    device: str = "cpu"
    dtype: str = "auto"  # auto: bfloat16 autocast on CUDA, float32 on CPU
    threads: int = 0  # torch CPU threads (0: torch's default; 1 is fastest for tiny models on a busy CPU)
    # -- run
    seed: int = 0
    output_dir: str = "runs/align"
    save_every: int = 5
    report_every: int = 0  # save each rollout (text, speech, reward, advantage) every N steps for the report; 0: off
    resume: bool = False

    def __post_init__(self) -> None:
        check_mode(self.mode)
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (GRPO compares rollouts), got {self.group_size}")
        if self.kl_every < 0:
            raise ValueError(f"kl_every must be >= 0 (0: never measure KL unless beta > 0), got {self.kl_every}")
        if not 0 <= self.fixed_lambda <= 1:
            raise ValueError(f"fixed_lambda must be in [0, 1], got {self.fixed_lambda}")
        lo, hi = self.reward_range
        if not hi > lo:
            raise ValueError(f"reward_range must be [low, high] with high > low, got {self.reward_range}")
        self.reward_range = (float(lo), float(hi))


def load_config(name_or_path: str | None, overrides: dict[str, Any] | None = None) -> AlignConfig:
    """Defaults < YAML (a shipped name or a path) < overrides (flags). Relative data paths follow the YAML."""
    import yaml

    data: dict[str, Any] = {}
    base = Path.cwd()
    if name_or_path:
        path = Path(name_or_path)
        if not path.suffix and (CONFIG_DIR / f"{name_or_path}.yaml").is_file():
            path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            shipped = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
            raise ValueError(f"no align config '{name_or_path}' (shipped: {shipped}; or a YAML path)")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        base = path.parent
    known = {f.name for f in fields(AlignConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown align config keys: {sorted(unknown)}")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    if data.get("data") and not Path(data["data"]).is_absolute():
        data["data"] = str((base / data["data"]).resolve())
    if "reward_range" in data:
        data["reward_range"] = tuple(float(x) for x in data["reward_range"])
    for f in fields(AlignConfig):  # YAML 1.1 reads 1e-4 (no dot) as a string: numbers by the field's type
        if f.name in data and f.type in ("float", "int") and isinstance(data[f.name], str):
            try:
                data[f.name] = float(data[f.name]) if f.type == "float" else int(data[f.name])
            except ValueError as e:
                raise ValueError(f"align config {f.name}: expected a number, got {data[f.name]!r}") from e
    return AlignConfig(**data)


# ---------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------


# Policy families' factories by name (a config's ``policy``); any other ``package.module:factory`` works too.
# A factory takes the config's ``policy_args``; one with a ``corpus`` parameter also gets the training texts.
POLICIES = {
    "tiny": "align.interleaved.tiny:build_tiny_policy",
    "reference": "align.interleaved.reference:build_reference_policy",
    "interleaved": "align.interleaved.native:build_native_policy",  # a checkpoint that has speech tokens
    "tiny-interleaved-native": "align.interleaved.native:build_tiny_native_policy",
    "omni": "align.omni:build_omni_policy",  # Qwen2.5-Omni thinker-talker
    "tiny-omni": "align.omni:build_tiny_omni_policy",
    "moshi": "align.moshi:build_moshi_policy",  # parallel text + audio codebook streams
    "tiny-moshi": "align.moshi:build_tiny_moshi_policy",
}


def build_policy(config: AlignConfig, examples: list[Example]):
    import importlib
    import inspect

    target = POLICIES.get(config.policy, config.policy)
    module, _, name = target.partition(":")
    if not name:
        raise ValueError(f"unknown policy {config.policy!r} (built in: {', '.join(POLICIES)}; or "
                         "'package.module:factory')")
    factory = getattr(importlib.import_module(module), name)
    kwargs = dict(config.policy_args)
    params = inspect.signature(factory).parameters
    if "corpus" in params:
        kwargs["corpus"] = [m["content"] for e in examples for m in e.text_messages()] + [e.target_text
                                                                                          for e in examples]
    if "seed" in params and "seed" not in kwargs:
        kwargs["seed"] = config.seed
    return factory(**kwargs)


def build_reward(config: AlignConfig):
    from rewards.composite import CompositeScorer

    if not config.reward:
        raise ValueError("the config needs a reward: a composite config ({components: [...]})")
    return CompositeScorer.from_dict(config.reward)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters the optimiser changes (all of them, or the LoRA adapters)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class StepClock:
    """Seconds per part of a step (``gen``, ``decode``, ``score``, ``score_<component>``, ``logp``, ``kl``,
    ``backward``, ``opt``), summed over a step's calls; `reset` at the start of each step. The parts do not
    overlap, except ``score_<component>``, which are inside ``score``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds = {}

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def __call__(self, part: str):
        return _Section(self, part)


class _Section:
    def __init__(self, clock: StepClock, part: str):
        self.clock, self.part = clock, part

    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.clock.add(self.part, time.perf_counter() - self.t)
        return False


def time_scorers(reward, clock: StepClock) -> list[str]:
    """Time each scorer the reward runs (a composite's components; else the reward itself) into ``clock`` as
    ``score_<name>`` (components that share one scorer instance: their names joined by ``+``); returns the names."""
    from functools import wraps

    instances: dict[int, tuple[Any, list[str]]] = {}
    components = getattr(getattr(reward, "config", None), "components", None)
    if components and hasattr(reward, "component_scorer"):
        for c in components:
            scorer = reward.component_scorer(c.name)
            instances.setdefault(id(scorer), (scorer, []))[1].append(c.name)
    else:
        instances[id(reward)] = (reward, [getattr(reward, "name", "reward")])
    names = []
    for scorer, component_names in instances.values():
        name = "+".join(component_names)
        score = scorer.score

        @wraps(score)
        def timed(samples, _score=score, _part=f"score_{name}"):
            with clock(_part):
                return _score(samples)

        scorer.score = timed  # an instance attribute: only this run's reward is timed
        names.append(name)
    return names


def score_rollouts(reward, policy, example_groups, trajs_groups, step: int, clock: StepClock | None = None,
                   keep: list | None = None):
    """Decode each rollout's speech and score it: rewards grouped per prompt (None where the reward failed). The
    scored samples are appended to ``keep`` when it is given."""
    from rewards.base import Sample, score_each

    clock = clock or StepClock()
    samples = []
    # decode speech only for a reward that listens (decoding is the codec's vocoder: not free)
    needs_audio = getattr(reward, "sample_rate", None) is not None or "audio" in getattr(reward, "requires", {"audio"})
    with clock("decode"):
        for example, trajs in zip(example_groups, trajs_groups):
            for k, traj in enumerate(trajs):
                audio, rate = None, None
                if traj.count(SPEECH) and needs_audio:
                    audio, rate = policy.decode_speech(traj.speech_tokens)
                    if audio is None or len(audio) == 0:
                        audio, rate = None, None
                samples.append(Sample(id=f"{example.id}/s{step}/g{k}", audio=audio, sample_rate=rate, text=traj.text,
                                      prompt=example.question_text, reference=example.judge_reference,
                                      meta={"group": example.id, **({"style": example.style} if example.style
                                                                     else {})}))
    with clock("score"):
        scores = score_each(reward, samples)
    if keep is not None:
        keep.extend(samples)
    G = len(trajs_groups[0]) if trajs_groups else 0
    rewards = [[s.value for s in scores[i * G:(i + 1) * G]] for i in range(len(trajs_groups))]
    return rewards, scores


def _layout(trajs) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, channels) [B, T] of trajectories as the policy's ``logprobs`` lays them out (right-padded), without a
    forward pass: what the loss normalisers are counted from before any micro-batch runs."""
    longest = max((len(t.completion_ids) for t in trajs), default=0)
    mask = torch.zeros((len(trajs), longest), dtype=torch.bool)
    channels = torch.full((len(trajs), longest), PAD_CHANNEL, dtype=torch.long)
    for i, t in enumerate(trajs):
        n = len(t.completion_ids)
        mask[i, :n] = True
        channels[i, :n] = torch.tensor(t.channels, dtype=torch.long)
    return mask, channels


def _rl_count(trajs, adv_flat: torch.Tensor, channels_in_loss, micro: int) -> int:
    """The positions the GRPO term covers over the whole (local) batch: its normaliser."""
    total = 0
    for i in range(0, len(trajs), micro):
        mask, channels = _layout(trajs[i:i + micro])
        total += int(loss_positions(mask, channels, channels_in_loss, adv_flat[i:i + micro].cpu()).sum())
    return total


def _sft_count(targets, micro: int) -> float:
    """What the SFT term is divided by over the whole (local) batch: its token count or summed weights."""
    total = 0.0
    for i in range(0, len(targets), micro):
        mask, _ = _layout(targets[i:i + micro])
        total += sft_weight_total(mask, _sft_weights(targets[i:i + micro], mask))
    return total


# ---------------------------------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------------------------------


def train(config: AlignConfig, *, log=None) -> dict[str, Any]:
    """Run (or resume) a training run; returns the last step's log row."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoint"
    if not config.resume and (ckpt_dir / "trainer.pt").exists():
        raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --output-dir")
    if config.resume and not (ckpt_dir / "trainer.pt").exists():
        raise ValueError(f"--resume: no checkpoint in {ckpt_dir}")
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)

    # data and policy
    examples, problems = read_examples(config.data)
    for p in problems:
        log(f"data: {p}")
    policy = build_policy(config, examples)
    examples = _usable(policy, examples, log)
    model = policy.model
    if config.init_weights:  # also on resume: the KL reference below is the starting model
        from align.policy import load_weights

        load_weights(model, config.init_weights)
    rank, world, local_rank = _distributed(config)
    device = torch.device(f"cuda:{local_rank}" if config.device == "cuda" and world > 1 else config.device)
    model.to(device)
    if config.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(**config.lora))
        policy.model = model
    # KL per channel is measured against the starting policy: a frozen copy (LoRA: the adapters disabled), kept
    # only when KL is ever measured (kl_every > 0) or optimised (β > 0)
    kl_in_loss = bool(config.beta_text or config.beta_speech)
    has_ref = kl_in_loss or config.kl_every > 0
    ref_model = None
    if has_ref and not config.lora:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    # SFT targets (example id -> target), built as examples are drawn; a family whose speech target comes from the
    # model itself (``targets_from_model``: omni's sft_speech 'self') gets them all now, from the starting model,
    # so they anchor to the start and a resumed run gets the same ones (rows without one are reported, skipped).
    target_cache: dict[str, Any] = {}
    if config.mode not in ("po-all", "po-text") and getattr(policy, "targets_from_model", False):
        examples, target_cache = _build_targets(policy, examples, log)
    reward = build_reward(config)
    if hasattr(reward, "prepare"):
        reward.prepare()
    clock = StepClock()
    time_scorers(reward, clock)
    controller = LambdaController(r_min=config.reward_range[0], r_max=config.reward_range[1],
                                  lam_max=config.lambda_max, ema=config.lambda_ema)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / config.warmup_steps) if config.warmup_steps else 1.0)
    cursor = Cursor(len(examples), config.seed)
    step = 0
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and config.dtype in
                ("auto", "bfloat16") else None)

    # resume: weights, optimiser, scheduler, RNG, λ, data cursor, step
    if config.resume:
        state = torch.load(ckpt_dir / "trainer.pt", weights_only=False)
        missing = model.load_state_dict(state["weights"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint does not fit the model: unexpected {missing.unexpected_keys[:3]}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        controller.load_state_dict(state["lambda"])
        cursor.load_state_dict(state["cursor"])
        set_rng_state(state["rng"])
        step = state["step"]
        log(f"resumed from step {step}")
    # the log as of the step the run starts from (later rows and a row cut off by a crash dropped), then the config
    writer = _open_log(out, config, world, step, log) if rank == 0 else None
    row: dict[str, Any] = {}

    while step < config.max_steps:
        step += 1
        t0 = time.perf_counter()
        clock.reset()
        # KL to the start this step: always when it is in the loss, else every kl_every steps and at the last one
        measure_kl = has_ref and (kl_in_loss or step % config.kl_every == 0 or step == config.max_steps)
        # 1. sample prompts and G rollouts each (seeded per step: resume draws the same rollouts)
        # (with N processes the step takes N × prompts_per_step prompts; each process its own slice)
        batch = [examples[i] for i in cursor.take(config.prompts_per_step * world)[rank::world]]
        prompts = [_prompt(policy, e) for e in batch]
        if config.mode == "sft" and not config.sft_rollouts:  # the warm start: reference answers only
            row = {"step": step, "mode": config.mode,
                   **_sft_step(config, policy, model, optimizer, scheduler, params, batch, prompts, autocast, world,
                              target_cache, clock),
                   "seconds": time.perf_counter() - t0, **_timings(clock, rollouts=False)}
            if writer is not None:
                writer.write(row)
                log(f"step {step}: loss_sft {row['loss_sft']:.4f} ({row['seconds']:.1f} s)")
                if step % config.save_every == 0 or step == config.max_steps:
                    _save(ckpt_dir, model, optimizer, scheduler, controller, cursor, step, config)
            continue
        with clock("gen"):
            groups = policy.generate(prompts, config.group_size, temperature=config.temperature, top_p=config.top_p,
                                     max_new_tokens=config.max_new_tokens,
                                     seed=config.seed * 1_000_003 + step * world + rank)

        # 2. decode speech and score: rewards per group (None = could not score, excluded from the statistics)
        report_step = config.report_every > 0 and (step % config.report_every == 0 or step == config.max_steps)
        samples: list | None = [] if report_step else None
        rewards, scores = score_rollouts(reward, policy, batch, groups, step, clock, keep=samples)
        if config.resample_zero_var:
            for i, rs in enumerate(rewards):
                vals = [r for r in rs if r is not None]
                if len(vals) >= 2 and max(vals) == min(vals):
                    with clock("gen"):
                        (groups[i],) = policy.generate([prompts[i]], config.group_size,
                                                       temperature=config.temperature, top_p=config.top_p,
                                                       max_new_tokens=config.max_new_tokens,
                                                       seed=config.seed * 1_000_003 + step + 500_000 + i)
                    redrawn: list | None = [] if samples is not None else None
                    new, new_scores = score_rollouts(reward, policy, [batch[i]], [groups[i]], step, clock,
                                                     keep=redrawn)
                    rewards[i] = new[0]
                    scores[i * config.group_size:(i + 1) * config.group_size] = new_scores
                    if samples is not None:
                        samples[i * config.group_size:(i + 1) * config.group_size] = redrawn

        # 3. group advantages and λ
        adv, adv_stats = group_advantages(rewards, std_floor=config.std_floor)
        lam_stats = controller.update(_gather(rewards, world))  # every process sees every group: one λ
        lam = {"wavalign": controller.lam, "fixed": config.fixed_lambda}.get(config.mode, 0.0)

        # 4. hybrid loss, one micro-batch at a time (forward, backward: only one micro-batch's activations are
        # alive), each part normalised by the whole batch's token counts (counted from the trajectories); step.
        # One on-policy update per generation, as the paper: the GRPO ratio is exp(logp - logp.detach()), so no
        # second forward pass for old log-probs.
        trajs = [t for g in groups for t in g]
        targets = _sft_targets(policy, prompts, batch, target_cache)
        adv_flat = flatten_advantages(adv, device=device)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        micro = config.micro_batch_size
        rl_trajs = trajs if config.mode != "sft" else []
        sft_trajs = targets if config.mode not in ("po-all", "po-text") else []
        rl_channels = RL_CHANNELS.get(config.mode, ("text",))
        rl_total = _rl_count(rl_trajs, adv_flat, rl_channels, micro) or 1
        sft_total = _sft_count(sft_trajs, micro) or 1
        rl_total, sft_total = _sum_over_processes([rl_total, sft_total], world)  # normalise by global counts
        terms_sum: dict[str, float] = {}
        kl_sum: dict[str, list] = {}
        for start in range(0, max(len(rl_trajs), len(sft_trajs)), micro):
            kwargs: dict[str, Any] = {}
            chunk = rl_trajs[start:start + micro]
            if chunk:
                with clock("logp"), autocast or _null():
                    logp, mask, channels = policy.logprobs(chunk)
                ref_logp = None
                if measure_kl:
                    with clock("kl"), torch.no_grad(), autocast or _null(), _reference(policy, ref_model):
                        ref_logp = policy.logprobs(chunk)[0]
                kwargs.update(logp=logp, old_logp=None, adv=adv_flat[start:start + logp.shape[0]], mask=mask,
                              channels=channels, ref_logp=ref_logp, rl_normalizer=rl_total)
            sft_chunk = sft_trajs[start:start + micro]
            if sft_chunk:
                with clock("logp"), autocast or _null():
                    sft_logp, sft_mask, _ = policy.logprobs(sft_chunk)
                kwargs.update(sft_logp=sft_logp, sft_mask=sft_mask, sft_weights=_sft_weights(sft_chunk, sft_mask),
                              sft_normalizer=sft_total)
            with clock("backward"):
                loss, terms = _loss_part(config, lam, kwargs)
                if loss.requires_grad:
                    loss.backward()
            for name, value in terms.items():  # loss parts add up (each divided by the whole batch's counts)
                if name.startswith("loss") and isinstance(value, float) and math.isfinite(value):
                    terms_sum[name] = terms_sum.get(name, 0.0) + value
            if chunk and measure_kl:  # KL: token means per micro-batch, pooled over the batch by token counts
                _pool_kl(kl_sum, terms, channel_counts(mask, channels))
        if config.mode == "sft" and measure_kl:
            # no gradient flows through the rollouts in sft, but their KL to the start is still measured
            with clock("kl"), torch.no_grad(), autocast or _null():
                for i in range(0, len(trajs), micro):
                    logp, mask, channels = policy.logprobs(trajs[i:i + micro])
                    with _reference(policy, ref_model):
                        ref_logp = policy.logprobs(trajs[i:i + micro])[0]
                    kl = {f"kl_{n}": v.item() for n, v in kl_per_channel(logp, ref_logp, mask, channels).items()}
                    _pool_kl(kl_sum, kl, channel_counts(mask, channels))
        with clock("opt"):
            grad_norm = _optimizer_step(config, params, optimizer, scheduler, world)

        # 5. log one row per step: the whole step's (every process's rewards, rollouts and loss parts)
        lengths = [(t.count(TEXT), t.count(SPEECH), t.finished) for t in trajs]
        if world > 1:
            rewards, scores, lengths = (_gather(x, world) for x in (rewards, scores, lengths))
            adv_stats = group_advantages(rewards, std_floor=config.std_floor)[1]
            terms_sum, kl_sum = _sum_terms(terms_sum, kl_sum, world)
        terms_sum.update({f"kl_{name}": total / n for name, (total, n) in kl_sum.items() if n})
        terms_sum["w_sft"], terms_sum["w_rl"] = mode_weights(config.mode, lam)
        row = _log_row(step, config, rewards, scores, adv_stats, lam_stats, lam, terms_sum, lengths, grad_norm,
                       scheduler.get_last_lr()[0], clock, time.perf_counter() - t0)
        if writer is None:
            continue  # other processes: rank 0 logs and checkpoints
        writer.write(row)
        log(f"step {step}: reward {_fmt(row['reward_mean'])} λ {lam:.3f} loss {_fmt(row['loss'])} "
            f"({row['seconds']:.1f} s)")

        # 6. rollouts for the listening report (rank 0's share of the step), then the checkpoint
        if samples is not None:
            _save_rollouts(out / "rollouts", step, policy, batch, groups, samples, scores, adv, log)
        if step % config.save_every == 0 or step == config.max_steps:
            _save(ckpt_dir, model, optimizer, scheduler, controller, cursor, step, config)
    if writer is None:
        return row
    writer.close()
    _plot(out / "log.csv", out / "curves.png")
    return row


def _save_rollouts(folder: Path, step: int, policy, batch, groups, samples, scores, adv, log) -> None:
    """``rollouts/step-NNNNNN.jsonl`` (one line per rollout: prompt, text, transcript, reward and its components,
    advantage, error) and its speech as 16-bit WAV under ``rollouts/step-NNNNNN/``, the layout `evalsuite.report`
    reads. Speech a listening reward did not decode is decoded here. A rollout whose speech cannot be decoded or
    written keeps its line, with the error; the JSONL is written whole, then renamed."""
    import soundfile as sf

    name = f"step-{step:06d}"
    (folder / name).mkdir(parents=True, exist_ok=True)
    G = len(groups[0]) if groups else 0
    lines = []
    for i, (example, trajs) in enumerate(zip(batch, groups)):
        for k, traj in enumerate(trajs):
            sample, score = samples[i * G + k], scores[i * G + k]
            error, audio_path = score.error, None
            audio, rate = sample.audio, sample.sample_rate
            try:
                if audio is None and traj.count(SPEECH):
                    audio, rate = policy.decode_speech(traj.speech_tokens)
                if audio is not None and len(audio) and rate:
                    audio_path = f"{name}/{_file_id(example.id)}-{k}.wav"
                    sf.write(folder / audio_path, np.clip(np.asarray(audio, dtype=np.float32), -1, 1), int(rate),
                             subtype="PCM_16")
            except Exception as exc:  # noqa: BLE001 - a rollout's speech never stops the run
                audio_path, error = None, f"speech not saved: {type(exc).__name__}: {exc}"
            metrics = score.metrics or {}
            components = {k2: (float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
                          for k2, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                          and not k2.endswith(".raw") and k2 not in ("weights_used", "group_size")}
            transcript = next((v for k2, v in metrics.items() if k2.endswith("transcript") and isinstance(v, str)),
                              None)
            a = adv[i][k] if i < len(adv) and k < len(adv[i]) else None
            lines.append({"step": step, "prompt_id": example.id, "prompt": example.question_text, "rollout": k,
                          "text": traj.text, "audio": audio_path, "transcript": transcript,
                          "reward": score.value, "components": components,
                          "advantage": None if a is None else float(a), "error": error})
    write_atomic(folder / f"{name}.jsonl",
                 "".join(json.dumps(line, ensure_ascii=False, default=str) + "\n" for line in lines).encode("utf-8"))
    log(f"step {step}: {len(lines)} rollouts saved for the report in {folder / name}")


def _file_id(item_id: str) -> str:
    """An example id as a file name: path separators and odd characters replaced."""
    return re.sub(r"[^\w.-]+", "_", str(item_id)).strip("._")[:80] or "item"


def _usable(policy, examples: list[Example], log) -> list[Example]:
    """The examples this policy can be prompted with: a spoken turn needs a policy that hears audio, or the row's
    ``question_text`` (reported and skipped otherwise, never replaced by an empty question)."""
    if getattr(policy, "hears_audio", False):
        return examples
    keep = []
    for e in examples:
        if e.audios and not (e.question_text or "").strip():
            log(f"data: {e.id}: a spoken user turn without question_text, and policy {policy.family} does not "
                "hear audio; skipped")
        else:
            keep.append(e)
    if not keep:
        raise ValueError("no training row can reach this policy (spoken turns need question_text)")
    return keep


def _prompt(policy, example: Example):
    """The policy's prompt of an example: its spoken turns as audio when the policy hears audio, else as text."""
    if getattr(policy, "hears_audio", False):
        return policy.build_prompt(example.messages, example.audios)
    return policy.build_prompt(example.text_messages())


def _sft_targets(policy, prompts, batch, cache: dict | None = None):
    """The reference answers of a step's prompts, laid out as the policy's SFT targets (cached per example: the
    layout is deterministic, and encoding the reference speech can be a codec's forward pass)."""
    out = []
    for p, e in zip(prompts, batch):
        target = cache.get(e.id) if cache is not None else None
        if target is None:
            target = policy.sft_target(p, e.target_text, audio=e.target_audio)
            if cache is not None:
                cache[e.id] = target
        out.append(target)
    return out


def _build_targets(policy, examples: list[Example], log) -> tuple[list[Example], dict[str, Any]]:
    """(the examples that have an SFT target, example id -> target). A policy with ``sft_targets`` builds them in
    batches (one row at a time only to find the rows that fail)."""
    if hasattr(policy, "sft_targets"):
        try:
            targets = policy.sft_targets([_prompt(policy, e) for e in examples], [e.target_text for e in examples],
                                         [e.target_audio for e in examples])
            return examples, {e.id: t for e, t in zip(examples, targets)}
        except (ValueError, OSError):
            pass  # some row fails: find it below
    keep, cache = [], {}
    for e in examples:
        try:
            cache[e.id] = policy.sft_target(_prompt(policy, e), e.target_text, audio=e.target_audio)
            keep.append(e)
        except (ValueError, OSError) as err:
            log(f"data: {e.id}: no SFT target ({first_line(err)}); skipped")
    if not keep:
        raise ValueError("no training row has a usable SFT target")
    return keep, cache


def _sft_weights(trajs, mask: torch.Tensor) -> torch.Tensor | None:
    """[B, T] SFT weights of a micro-batch laid out like ``mask`` (None when no trajectory weighs its positions)."""
    if all(t.weights is None for t in trajs):
        return None
    weights = torch.zeros(mask.shape, dtype=torch.float32)
    for i, t in enumerate(trajs):
        n = len(t.completion_ids)
        weights[i, :n] = torch.tensor(t.weights, dtype=torch.float32) if t.weights is not None else 1.0
    return weights.to(mask.device)


def _optimizer_step(config: AlignConfig, params, optimizer, scheduler, world: int) -> float:
    """Sum the processes' gradients (DDP; each already divided by global counts), clip, step; the grad norm."""
    _all_reduce_grads(params, world)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip)) if config.grad_clip else 0.0
    optimizer.step()
    scheduler.step()
    return grad_norm


def _pool_kl(kl_sum: dict[str, list], terms: dict[str, Any], counts: dict[str, int]) -> None:
    """Add one micro-batch's per-channel KL means (``kl_text``...) to ``kl_sum``, weighted by its token counts."""
    for name, n in counts.items():
        value = terms.get(f"kl_{name}")
        if isinstance(value, float) and math.isfinite(value) and n:
            acc = kl_sum.setdefault(name, [0.0, 0])
            acc[0], acc[1] = acc[0] + value * n, acc[1] + n


def _sft_step(config, policy, model, optimizer, scheduler, params, batch, prompts, autocast, world,
              target_cache, clock: StepClock) -> dict[str, Any]:
    """One optimizer step on the reference answers alone (mode sft without rollouts): no generation, no reward."""
    targets = _sft_targets(policy, prompts, batch, target_cache)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    micro = config.micro_batch_size
    (normalizer,) = _sum_over_processes([_sft_count(targets, micro) or 1], world)
    loss_sum = 0.0
    for i in range(0, len(targets), micro):  # forward and backward one micro-batch at a time
        with clock("logp"), autocast or _null():
            logp, mask, _ = policy.logprobs(targets[i:i + micro])
        with clock("backward"):
            loss, _ = sft_loss(logp, mask, normalizer=normalizer, weights=_sft_weights(targets[i:i + micro], mask))
            loss.backward()
        loss_sum += float(loss.detach())
    with clock("opt"):
        grad_norm = _optimizer_step(config, params, optimizer, scheduler, world)
    if world > 1:  # each process's share is divided by the global count: the step's loss is their sum
        loss_sum = _sum_terms({"loss": loss_sum}, {}, world)[0]["loss"]
    return {"loss": loss_sum, "loss_sft": loss_sum, "w_sft": 1.0, "w_rl": 0.0,
            "len_target": float(np.mean([len(t.completion_ids) for t in targets])), "grad_norm": grad_norm,
            "lr": scheduler.get_last_lr()[0]}


def _timings(clock: StepClock, rollouts: bool = True) -> dict[str, float]:
    """The step's time breakdown for its log row: ``t_gen``, ``t_decode``, ``t_score`` (``t_score_<name>`` per
    scorer, inside it), ``t_logp`` (the policy's forward passes), ``t_kl`` (the starting policy's), ``t_backward``
    (loss and backward), ``t_opt`` (gradient all-reduce, clipping, optimizer). ``seconds`` minus the parts is the
    loop's own glue. ``seconds_generate`` / ``seconds_score`` (decoding + scoring) as in earlier logs. A step
    without rollouts (the SFT warm start) has only ``t_logp``, ``t_backward`` and ``t_opt``."""
    if not rollouts:
        return {f"t_{p}": clock.seconds.get(p, 0.0) for p in ("logp", "backward", "opt")}
    parts = ("gen", "decode", "score", "logp", "kl", "backward", "opt")
    row = {f"t_{p}": clock.seconds.get(p, 0.0) for p in parts}
    row.update({f"t_{p}": v for p, v in sorted(clock.seconds.items()) if p.startswith("score_")})
    row["seconds_generate"] = row["t_gen"]
    row["seconds_score"] = row["t_decode"] + row["t_score"]
    return row


def _distributed(config: AlignConfig) -> tuple[int, int, int]:
    """(rank, world size, local rank) under accelerate launch / torchrun; the process group is started here."""
    rank, world, local_rank = (int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1),
                                                                         ("LOCAL_RANK", 0)))
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if config.device == "cuda" else "gloo")
    return rank, world, local_rank


def _gather(groups: list, world: int) -> list:
    if world == 1:
        return groups
    import torch.distributed as dist

    parts: list = [None] * world
    dist.all_gather_object(parts, groups)
    return [g for part in parts for g in part]


def _sum_over_processes(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return [v or 1 for v in t.tolist()]


LOSS_TERMS = ("loss", "loss_sft", "loss_grpo", "loss_kl")


def _sum_terms(terms: dict[str, float], kl_sum: dict[str, list], world: int) -> tuple[dict[str, float], dict]:
    """The step's loss parts (each process's share is already divided by the global counts: they add up) and KL
    sums and counts per channel, summed over the processes (a part some process lacks stays absent)."""
    import torch.distributed as dist

    names = ("text", "speech", "all")
    values = [terms.get(k, math.nan) for k in LOSS_TERMS] + [x for n in names for x in kl_sum.get(n, [0.0, 0])]
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    out = t.tolist()
    summed = {k: v for k, v in zip(LOSS_TERMS, out) if math.isfinite(v)}
    kl = {n: [out[len(LOSS_TERMS) + 2 * i], int(out[len(LOSS_TERMS) + 2 * i + 1])] for i, n in enumerate(names)}
    return summed, kl


def _all_reduce_grads(params, world: int) -> None:
    if world == 1:
        return
    import torch.distributed as dist

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def _loss_part(config: AlignConfig, lam: float, kwargs: dict[str, Any]):
    mode = config.mode
    if "logp" not in kwargs and mode in ("wavalign", "fixed"):  # this micro-batch only holds reference answers
        mode, scale = "sft", 1.0 - lam
    elif "sft_logp" not in kwargs and mode in ("wavalign", "fixed"):  # only rollouts
        mode, scale = "po-text", lam
    else:
        scale = 1.0
    loss, terms = hybrid_loss(mode, lam, beta_text=config.beta_text, beta_speech=config.beta_speech, **kwargs)
    # the parts (loss_sft, loss_grpo, loss_kl) stay unweighted, as hybrid_loss reports them; the total is weighted
    return loss * scale, {**terms, "loss": terms["loss"] * scale}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _reference:
    """Swap the policy's model for the frozen starting model (or disable the LoRA adapters) for a forward pass."""

    def __init__(self, policy, ref_model):
        self.policy, self.ref_model, self._saved, self._ctx = policy, ref_model, None, None

    def __enter__(self):
        if self.ref_model is not None:
            self._saved, self.policy.model = self.policy.model, self.ref_model
        else:
            self._ctx = self.policy.model.disable_adapter()
            self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        if self._saved is not None:
            self.policy.model = self._saved
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        return False


def _fmt(value: float | None) -> str:
    """A log figure: 4 decimals, or "none" (every reward of a step can fail; the run goes on)."""
    return "none" if value is None else f"{value:.4f}"


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def _log_row(step, config, rewards, scores, adv_stats, lam_stats, lam, terms, lengths, grad_norm, lr,
             clock: StepClock, seconds) -> dict[str, Any]:
    """One log row; ``lengths``: (text positions, speech positions, finished) per rollout."""
    flat = [r for g in rewards for r in g if r is not None]
    mean, std = _mean_std(flat)
    row: dict[str, Any] = {"step": step, "mode": config.mode, "reward_mean": mean, "reward_std": std,
                           "reward_none": sum(r is None for g in rewards for r in g),
                           "frac_zero_var": adv_stats.get("frac_zero_var"),
                           "reward_group_var": lam_stats.get("var_mean"),
                           "lambda": lam, "lambda_raw": lam_stats.get("lam_raw"), "lambda_ema": lam_stats.get("lam"),
                           "gate_v": lam_stats.get("v_mean"), "gate_g": lam_stats.get("g_mean")}
    components = sorted({k for s in scores for k in s.metrics
                         if not k.endswith(".raw") and k not in ("weights_used", "group_size")})
    for name in components:
        values = [s.metrics[name] for s in scores if isinstance(s.metrics.get(name), (int, float))]
        row[f"reward.{name}_mean"], row[f"reward.{name}_std"] = _mean_std([float(v) for v in values])
    for key in ("loss", "loss_sft", "loss_grpo", "loss_kl", "w_sft", "w_rl", "kl_text", "kl_speech", "kl_all"):
        row[key] = terms.get(key)
    row.update({"len_text": float(np.mean([n for n, _, _ in lengths])) if lengths else None,
                "len_speech": float(np.mean([n for _, n, _ in lengths])) if lengths else None,
                "frac_finished": float(np.mean([f for _, _, f in lengths])) if lengths else None,
                "grad_norm": grad_norm, "lr": lr, "seconds": seconds, **_timings(clock)})
    if torch.cuda.is_available():
        row["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        import resource

        row["peak_mem_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


class _LogWriter:
    """log.csv (one row per step, appended and fsynced) and TensorBoard scalars when tensorboard is installed.

    Opening it brings the log to ``after_step``, the step the run starts from (:func:`_truncate_log`)."""

    def __init__(self, path: Path, after_step: int = 0, log=None, record=None):
        self.path = path
        self.columns = _truncate_log(path, after_step, log, record)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(path.parent / "tensorboard"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            self.tb = None

    def write(self, row: dict[str, Any]) -> None:
        lines = []
        if self.columns is None:
            self.columns = list(row)
            lines.append(self.columns)
        lines.append(["" if row.get(c) is None else row.get(c) for c in self.columns])
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(lines)
        _append(self.path, buffer.getvalue().encode("utf-8"))
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v):
                    self.tb.add_scalar(k, v, row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _append(path: Path, data: bytes) -> None:
    """Append ``data`` and fsync; a write cut short (disk full) is taken back before WriteError is raised."""
    created = not path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise WriteError(path, e) from e
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if created:
                fsync_dir(path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):  # if even this fails, the next resume drops the cut-off row
                os.ftruncate(fd, start)
            raise WriteError(path, e) from e
    finally:
        os.close(fd)


def _truncate_log(path: Path, step: int, log=None, record=None) -> list[str] | None:
    """Bring log.csv to ``step``, the step the run starts from: drop the rows of later steps (a killed run may have
    logged steps it never saved; 0: a fresh start, nothing kept) and any row that is not whole (cut off by a crash or
    a full disk), rewriting the file atomically. Returns the header (None: none kept). Dropping rows that were not
    whole is a repair: logged and handed to ``record`` before the file changes (see evalsuite.results.repair_rows)."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if not path.exists():
        return None
    raw = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    text = raw.decode("utf-8", errors="replace")
    whole, torn = text, ""
    if text and not text.endswith("\n"):  # rows end with a newline: a tail without one is a cut-off row
        whole, torn = text[:text.rfind("\n") + 1], text[text.rfind("\n") + 1:]
    lines = whole.splitlines(keepends=True)
    nul = sum("\x00" in line for line in lines)  # a crash on some file systems leaves zeros where a row was going
    rows = [r for r in csv.reader(io.StringIO("".join(x for x in lines if "\x00" not in x), newline="")) if r]
    header = rows[0] if rows and "\x00" not in lines[0] else None
    keep, later, bad = [], [], nul + (1 if torn else 0)
    for r in rows[1:] if header else []:
        if len(r) != len(header) or not r[0].isdigit():
            bad += 1
        elif int(r[0]) <= step:
            keep.append(r)
        else:
            later.append(int(r[0]))
    if bad:
        log(f"{path.name}: dropped {'a truncated last row' if torn and bad == 1 else f'{bad} unreadable row(s)'} "
            "(left by an interrupted or failed write); its step is trained again")
        if record is not None:
            record({"file": path.name, "dropped_lines": bad, "dropped_bytes": len(torn.encode()),
                    "kind": "truncated last line" if torn and bad == 1 else "unreadable lines", "time": _now(),
                    "key": f"{len(raw)}:{hashlib.sha1(raw).hexdigest()[:16]}:{mtime}"})
    if later:
        after = f"logged after the checkpoint of step {step}" if step else "of a run that saved no checkpoint"
        log(f"{path.name}: dropped the rows of steps {min(later)}-{max(later)}, {after}; they are trained again")
    if step == 0 or header is None:
        if text:
            try:
                path.unlink()
            except OSError as e:
                raise WriteError(path, e) from e
        return None
    if bad or later:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows([header, *keep])
        write_atomic(path, buffer.getvalue().encode("utf-8"))
    return header


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _open_log(out: Path, config: AlignConfig, world: int, step: int, log) -> _LogWriter:
    """log.csv brought to ``step`` (the step the run starts from), and config.json written with the repairs of this
    run's resumes (rows cut off by a crash, dropped from the log)."""
    repairs = read_json(out / "config.json").get("repairs", []) if config.resume else []

    def record(repair: dict[str, Any]) -> None:
        nonlocal repairs
        repairs = add_repair(repairs, repair)
        _write_config(out / "config.json", config, world, repairs)

    writer = _LogWriter(out / "log.csv", step, log, record)
    _write_config(out / "config.json", config, world, repairs)
    return writer


def _write_config(path: Path, config: AlignConfig, world: int, repairs: list[dict[str, Any]]) -> None:
    """The resolved config and the repairs of the run's resumes, written atomically."""
    data = {**asdict(config), "world_size": world, "repairs": list(repairs)}
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))


def _save(ckpt_dir: Path, model, optimizer, scheduler, controller, cursor, step: int, config: AlignConfig) -> None:
    """Everything exact resume needs, written atomically (a kill mid-save leaves the previous checkpoint)."""
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(ckpt_dir, e) from e
    state = {"weights": trainable_state(model), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "lambda": controller.state_dict(), "cursor": cursor.state_dict(),
             "rng": rng_state(), "step": step, "config": asdict(config)}
    target = _WriteRecorder()
    try:
        write_atomic(ckpt_dir / "trainer.pt", lambda f: torch.save(state, target.wrap(f)))
    except RuntimeError as e:  # torch.save turns a failed write (disk full) into a RuntimeError without the reason
        if target.error is None:
            raise
        raise WriteError(ckpt_dir / "trainer.pt", target.error) from e


class _WriteRecorder:
    """A file for torch.save that keeps the OSError of a failed write (torch.save reports only 'unexpected pos')."""

    def __init__(self):
        self.error: OSError | None = None
        self._file = None

    def wrap(self, f):
        self._file = f
        return self

    def write(self, data) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self._file.flush()


def _plot(log_csv: Path, png: Path) -> None:
    """Training curves: reward, λ, loss terms, KL per channel, lengths."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    with log_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return

    def series(name):
        return [float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows]

    steps = series("step")
    panels = [("reward", ["reward_mean"]), ("λ", ["lambda", "lambda_raw"]), ("loss", ["loss", "loss_sft", "loss_grpo"]),
              ("KL per channel", ["kl_text", "kl_speech"]), ("length (tokens)", ["len_text", "len_speech"])]
    fig = Figure(figsize=(12, 7))
    FigureCanvasAgg(fig)
    for i, (title, names) in enumerate(panels):
        ax = fig.add_subplot(2, 3, i + 1)
        drawn = [name for name in names if name in rows[0]]
        for name in drawn:
            ax.plot(steps, series(name), label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if drawn:
            ax.legend(fontsize=7)
    fig.tight_layout()
    write_atomic(png, lambda f: fig.savefig(f, format="png", dpi=100))


__all__ = ["AlignConfig", "MODES", "load_config", "train"]
