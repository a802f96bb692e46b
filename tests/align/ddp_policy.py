"""A tiny policy for the multi-process test: its rollouts depend on the prompt and the step only, not on how prompts
are split over processes, and it saves each step's gradients (what the optimizer stepped with).

Under ``accelerate launch`` every process draws its own prompts and seeds its sampler by its rank, so two processes
and one process over the same prompts sample different rollouts. This policy samples each prompt alone, seeded by
the prompt's token ids and the step, so one process with 2N prompts per step and two with N see the same rollouts,
and their gradients, parameters and λ can be compared.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch

from align.interleaved.tiny import build_tiny_policy


def build_ddp_test_policy(corpus, *, grads_dir: str, seed: int = 0, **kwargs):
    policy = build_tiny_policy(corpus, seed=seed, **kwargs)
    generate = policy.generate
    calls = {"step": 0}

    def save_grads() -> None:
        """The gradients the previous step's optimizer used (summed over processes, clipped if grad_clip > 0)."""
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        grads = {n: p.grad.detach().clone() for n, p in policy.model.named_parameters() if p.grad is not None}
        torch.save(grads, Path(grads_dir) / f"grads_step{calls['step']}_rank{rank}.pt")

    def per_prompt_generate(prompts, n, *, seed=None, **kw):
        if calls["step"]:
            save_grads()
        calls["step"] += 1
        groups = []
        for p in prompts:  # one prompt at a time, seeded by its ids and the step: independent of the split
            prompt_seed = zlib.crc32(repr(list(p)).encode()) + 7919 * calls["step"]
            groups += generate([p], n, seed=prompt_seed, **kw)
        return groups

    policy.generate = per_prompt_generate
    policy.save_grads = save_grads
    return policy
