"""The WavAlign objectives: the λ controller, group advantages, GRPO and SFT losses with channel masks, KL per channel.

The recipe (WavAlign's public code, MM-Speech/WavAlign ``trainer/vita_audio_rl_sft_trainer_masked.py``)::

    loss = (1 − λ) · SFT(all tokens of the reference answer) + λ · GRPO(text tokens of the rollouts)

with λ set from the rollouts' rewards by `LambdaController`. The ablation modes of `hybrid_loss` are ``wavalign``
(adaptive λ), ``fixed`` (a constant λ), ``po-all`` (GRPO on every token, no SFT), ``po-text`` (GRPO on text tokens
only, no SFT) and ``sft`` (SFT only).

Tensors follow the policy adapter's ``logprobs`` layout: ``logp``, ``mask`` and ``channels`` are ``[B, T]``
(completion positions, right-padded); ``mask`` marks real positions; ``channels`` holds `TEXT`, `SPEECH` or
`BOUNDARY` per position. Speech positions are the speech tokens plus the audio boundary tokens (the paper's
``include_audio_boundaries=True``), so the channel *names* used here are ``"text"`` = {TEXT} and ``"speech"`` =
{SPEECH, BOUNDARY}.

Gradient accumulation: every loss is a sum over the positions (or sequences) it covers divided by a normaliser,
by default its own count. To make micro-batches add up to the big batch, count first and pass the total::

    total = sum(int(loss_positions(mb.mask, mb.channels, ("text",), mb.adv).sum()) for mb in micro_batches)
    for mb in micro_batches:
        loss, _ = grpo_loss(mb.logp, None, mb.adv, mb.mask, mb.channels, normalizer=total)
        loss.backward()     # the summed gradients equal those of one big batch

(TRL's ``loss_type="dapo"`` does the same with ``num_items_in_batch``.)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch

from align.policy import BOUNDARY, SPEECH, TEXT

# Loss channel names → the position channels they cover (padding carries PAD_CHANNEL and is in neither).
CHANNELS = {"text": (TEXT,), "speech": (SPEECH, BOUNDARY)}  # boundary tokens count as speech for masking

MODES = ("wavalign", "fixed", "po-all", "po-text", "sft")
# Which channels the GRPO term trains on, per mode (sft has no GRPO term).
RL_CHANNELS = {"wavalign": ("text",), "fixed": ("text",), "po-all": ("text", "speech"), "po-text": ("text",)}
LOSS_TYPES = ("token", "sequence")


# ---------------------------------------------------------------------------------------------------------------
# λ controller
# ---------------------------------------------------------------------------------------------------------------


class LambdaController:
    """The adaptive RL weight λ of WavAlign, from the rollouts' rewards (a small pure object with a state dict).

    Per group of rollouts (one prompt), over its non-None rewards mapped to the judge scale (below)::

        v = clip(Var(R) / var_scale, 0, 1)                 information: do the rollouts disagree?
        g = sigmoid(gate_slope · (max R − gate_center))     reward gate: is any rollout good?
        λ_raw = lam_max · mean over groups of g · v
        λ     = clamp(ema · λ_prev + (1 − ema) · λ_raw, 0, lam_max)

    Choices, with the paper's code (``_compute_adaptive_lambda_stats``) as the source:

    - Var is the *population* variance (ddof 0; the paper's ``var(unbiased=False)``).
    - A group with fewer than two rewards has v = 0 (its population variance is 0 anyway) and still counts in the
      mean: no comparison is possible, which pulls λ towards SFT. A group with no reward at all (every reward None)
      contributes 0 to λ_raw and nothing to ``g_mean``. None rewards are dropped, never read as 0.
    - The paper smooths per group and averages the smoothed values; with λ_prev and λ_raw both in [0, lam_max] the
      clamp never binds there, so that equals smoothing the batch mean, which is what is done here.
    - The first update takes λ = λ_raw unsmoothed when ``lam_init`` is None (the paper's state starts empty);
      a number for ``lam_init`` (e.g. 0.0: start from pure SFT and ramp up) is smoothed from instead.
    - The paper computes λ from the current step's rollouts before the loss, so call `update` before `hybrid_loss`.

    The constants assume a 1–5 judge. For rewards in [r_min, r_max] each reward is first mapped to
    r' = 1 + 4 (r − r_min) / (r_max − r_min), so the constants keep their meaning for any range: rewards in
    [0, 1] give the same λ as the equivalent 1–5 rewards. Rewards outside the range are not clipped.

    Args:
        r_min, r_max: the reward range (defaults: a 1–5 judge, no rescaling).
        var_scale: the variance that saturates the information gate, on the 1–5 scale (paper: 4, the largest
            population variance of rewards in [1, 5]).
        gate_slope, gate_center: the reward gate's sigmoid, on the 1–5 scale (paper: 5 and 3).
        lam_max: the largest λ (paper: 0.8, so SFT always keeps at least 0.2).
        ema: the weight of the previous λ (paper: ``adaptive_ema_alpha=0.9``).
        lam_init: λ before the first update; None = the paper's behaviour (the first update takes λ_raw).
    """

    def __init__(
        self,
        r_min: float = 1.0,
        r_max: float = 5.0,
        var_scale: float = 4.0,
        gate_slope: float = 5.0,
        gate_center: float = 3.0,
        lam_max: float = 0.8,
        ema: float = 0.9,
        lam_init: float | None = None,
    ):
        if not r_max > r_min:
            raise ValueError(f"r_max ({r_max}) must be greater than r_min ({r_min})")
        if var_scale <= 0:
            raise ValueError(f"var_scale must be positive, got {var_scale}")
        if not 0.0 <= lam_max <= 1.0:
            raise ValueError(f"lam_max must lie in [0, 1], got {lam_max}")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must lie in [0, 1), got {ema}")
        if lam_init is not None and not 0.0 <= lam_init <= lam_max:
            raise ValueError(f"lam_init must lie in [0, lam_max={lam_max}], got {lam_init}")
        self.r_min, self.r_max = float(r_min), float(r_max)
        self.var_scale, self.gate_slope, self.gate_center = float(var_scale), float(gate_slope), float(gate_center)
        self.lam_max, self.ema = float(lam_max), float(ema)
        self.lam_init = lam_init
        self.lam = 0.0 if lam_init is None else float(lam_init)  # the λ to use now
        self.n_updates = 0

    def to_judge_scale(self, r: float) -> float:
        """Map a reward from [r_min, r_max] to the 1–5 scale the constants are written for."""
        return 1.0 + 4.0 * (r - self.r_min) / (self.r_max - self.r_min)

    def group_terms(self, rewards: Sequence[float | None]) -> tuple[float, float | None]:
        """(v, g) of one group; g is None when the group has no reward."""
        r = [self.to_judge_scale(float(x)) for x in rewards if x is not None]
        if not r:
            return 0.0, None
        g = 1.0 / (1.0 + math.exp(-self.gate_slope * (max(r) - self.gate_center)))
        var = self.group_variance(rewards)
        if var is None:
            return 0.0, g
        return min(max(var / self.var_scale, 0.0), 1.0), g

    def group_variance(self, rewards: Sequence[float | None]) -> float | None:
        """Population variance of a group's non-None rewards on the 1–5 scale (None below 2 rewards): what the
        information gate v divides by ``var_scale`` before clipping."""
        r = [self.to_judge_scale(float(x)) for x in rewards if x is not None]
        if len(r) < 2:
            return None
        mean = sum(r) / len(r)
        return sum((x - mean) ** 2 for x in r) / len(r)  # population variance, as the paper

    def update(self, group_rewards: Sequence[Sequence[float | None]]) -> dict[str, float]:
        """Fold one step's rollout rewards (one list per prompt) into λ; returns what to log.

        Returns:
            ``lam`` (the λ to use for this step's loss), ``lam_raw``, ``var_mean`` (mean `group_variance` over the
            groups with 2 or more rewards; NaN when none has), ``v_mean`` (mean information gate over all groups),
            ``g_mean`` (mean reward gate over the groups with a reward; NaN when none has one).
        """
        if len(group_rewards) == 0:
            raise ValueError("LambdaController.update needs at least one group of rewards")
        terms = [self.group_terms(group) for group in group_rewards]
        gv = [v * g if g is not None else 0.0 for v, g in terms]
        gates = [g for _, g in terms if g is not None]
        lam_raw = self.lam_max * sum(gv) / len(gv)
        if self.n_updates == 0 and self.lam_init is None:
            lam = lam_raw
        else:
            lam = self.ema * self.lam + (1.0 - self.ema) * lam_raw
        self.lam = min(max(lam, 0.0), self.lam_max)
        self.n_updates += 1
        variances = [self.group_variance(group) for group in group_rewards]
        variances = [v for v in variances if v is not None]
        return {
            "lam": self.lam,
            "lam_raw": lam_raw,
            "var_mean": sum(variances) / len(variances) if variances else float("nan"),
            "v_mean": sum(v for v, _ in terms) / len(terms),
            "g_mean": sum(gates) / len(gates) if gates else float("nan"),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_updates": self.n_updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.lam = float(state["lam"])
        self.n_updates = int(state["n_updates"])


# ---------------------------------------------------------------------------------------------------------------
# Group advantages
# ---------------------------------------------------------------------------------------------------------------


def group_advantages(
    rewards: Sequence[Sequence[float | None]],
    std_floor: float = 0.0,
    *,
    eps: float = 1e-4,
    unbiased: bool = False,
) -> tuple[list[list[float | None]], dict[str, Any]]:
    """GRPO advantages within each group of rollouts: A = (r − mean) / (max(std, std_floor) + eps).

    Choices:

    - mean and std run over the group's non-None rewards; a None reward (the scorer could not score that rollout)
      gets a None advantage, which `grpo_loss` leaves out of the loss and of its token count (TRL's reward
      functions may return None too; we drop the rollout rather than invent a number).
    - std is the population std (ddof 0), as the paper's final code (``rewards.std(unbiased=False) + 1e-4``);
      TRL's GRPOTrainer (and the paper's first release) use the sample std (``tensor.std()``, Bessel's
      correction): pass ``unbiased=True`` for that. With G = 4 the two differ by a factor √(4/3) on |A|.
    - ``eps = 1e-4`` is added to the std as in the paper and TRL. ``std_floor`` (reward units, default 0 = the
      paper) additionally floors the std, so that a group whose rewards differ only by scorer noise
      (e.g. 3.511 vs 3.513) does not get full-size ±1 advantages.
    - A zero-variance group (all its non-None rewards equal, including a group with one or no reward) gets
      advantages of exactly 0 and is counted: it teaches nothing and, as TRL does, still counts in the token
      normaliser (its tokens are not None).

    Returns:
        (advantages shaped like ``rewards``, stats) with stats ``n_groups``, ``n_rewards`` (non-None), ``n_none``,
        ``n_zero_var``, ``frac_zero_var`` and ``zero_var_groups`` (their indices, for optional resampling).
    """
    advantages: list[list[float | None]] = []
    zero_var_groups: list[int] = []
    n_rewards = n_none = 0
    for index, group in enumerate(rewards):
        r = [float(x) for x in group if x is not None]
        n_rewards += len(r)
        n_none += len(group) - len(r)
        if len(r) < 2 or max(r) == min(r):
            zero_var_groups.append(index)
            advantages.append([None if x is None else 0.0 for x in group])
            continue
        mean = sum(r) / len(r)
        std = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1 if unbiased else len(r)))
        scale = max(std, std_floor) + eps
        advantages.append([None if x is None else (float(x) - mean) / scale for x in group])
    n_groups = len(rewards)
    stats = {
        "n_groups": n_groups,
        "n_rewards": n_rewards,
        "n_none": n_none,
        "n_zero_var": len(zero_var_groups),
        "frac_zero_var": len(zero_var_groups) / n_groups if n_groups else 0.0,
        "zero_var_groups": zero_var_groups,
    }
    return advantages, stats


def flatten_advantages(advantages: Sequence[Sequence[float | None]], device=None) -> torch.Tensor:
    """Groups of advantages → one float tensor ``[B]`` in rollout order, NaN where the advantage is None."""
    flat = [float("nan") if a is None else float(a) for group in advantages for a in group]
    return torch.tensor(flat, dtype=torch.float32, device=device)


# ---------------------------------------------------------------------------------------------------------------
# Masks and losses
# ---------------------------------------------------------------------------------------------------------------


def channel_mask(mask: torch.Tensor, channels: torch.Tensor, names: Iterable[str]) -> torch.Tensor:
    """Bool ``[B, T]``: real positions whose channel is one of ``names`` (``"text"``, ``"speech"``)."""
    selected = torch.zeros_like(mask, dtype=torch.bool)
    for name in names:
        if name not in CHANNELS:
            raise ValueError(f"unknown channel {name!r}; expected one of {sorted(CHANNELS)}")
        for channel_id in CHANNELS[name]:
            selected |= channels == channel_id
    return selected & mask.bool()


def _as_advantage_tensor(adv: torch.Tensor | Sequence[float | None], like: torch.Tensor) -> torch.Tensor:
    if not isinstance(adv, torch.Tensor):
        adv = torch.tensor([float("nan") if a is None else float(a) for a in adv], dtype=torch.float32)
    adv = adv.to(device=like.device, dtype=like.dtype)
    if adv.shape != like.shape[:1]:
        raise ValueError(f"advantages have shape {tuple(adv.shape)}, expected ({like.shape[0]},)")
    return adv


def loss_positions(
    mask: torch.Tensor,
    channels: torch.Tensor,
    channels_in_loss: Iterable[str] = ("text",),
    adv: torch.Tensor | Sequence[float | None] | None = None,
) -> torch.Tensor:
    """Bool ``[B, T]``: the positions a GRPO loss covers (the channels asked for, rows whose advantage is known)."""
    positions = channel_mask(mask, channels, channels_in_loss)
    if adv is not None:
        adv = _as_advantage_tensor(adv, mask.float())
        positions = positions & ~torch.isnan(adv)[:, None]
    return positions


def _reduce(
    per_token: torch.Tensor, positions: torch.Tensor, loss_type: str, normalizer: float | None
) -> tuple[torch.Tensor, int]:
    """Sum a per-position loss over ``positions`` and normalise: per token (pooled) or per sequence."""
    weights = positions.to(per_token.dtype)
    # where() rather than a product: a NaN in an excluded position (e.g. a None advantage) must not leak in.
    masked = torch.where(positions, per_token, torch.zeros_like(per_token))
    if loss_type == "token":
        count = int(positions.sum())
        total = masked.sum()
    elif loss_type == "sequence":
        rows = positions.any(dim=1)
        count = int(rows.sum())
        total = (masked.sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)).sum()
    else:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    denominator = float(normalizer) if normalizer is not None else max(count, 1)
    return total / denominator, count


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor | None,
    adv: torch.Tensor | Sequence[float | None],
    mask: torch.Tensor,
    channels: torch.Tensor,
    *,
    channels_in_loss: Iterable[str] = ("text",),
    clip_eps: float = 0.2,
    loss_type: str = "token",
    normalizer: float | None = None,
) -> tuple[torch.Tensor, int]:
    """The GRPO policy-gradient loss over the chosen channels; returns (loss, count it was divided by).

    Per position, with A the rollout's advantage:

    - ``old_logp=None`` (the paper's single on-policy update): −exp(logp − logp.detach()) · A, whose value is −A
      and whose gradient is −A ∇logp. No clipping can apply (the ratio is 1).
    - with ``old_logp`` (several updates per batch): PPO's −min(ρA, clip(ρ, 1 − ε, 1 + ε)A), ρ = exp(logp −
      old_logp).

    Positions outside ``channels_in_loss``, padding and rows whose advantage is None/NaN get no loss and no
    gradient (unlike the paper's code, a row with no text token does not fall back to all its tokens: that would
    put the RL gradient on speech). ``loss_type="token"`` (default, the design's choice; TRL's ``bnpo``/``dapo``)
    divides the sum by the number of positions, so long answers weigh more; ``"sequence"`` (the paper's and
    TRL's ``grpo``) averages each rollout over its positions, then averages rollouts. ``normalizer`` replaces the
    local count (gradient accumulation, see the module docstring). No KL term here: see `hybrid_loss`.
    """
    adv = _as_advantage_tensor(adv, logp)
    positions = loss_positions(mask, channels, channels_in_loss, adv)
    a = torch.nan_to_num(adv, nan=0.0)[:, None]
    if old_logp is None:
        per_token = -torch.exp(logp - logp.detach()) * a
    else:
        ratio = torch.exp(logp - old_logp.detach())
        per_token = -torch.min(ratio * a, torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps) * a)
    return _reduce(per_token, positions, loss_type, normalizer)


def sft_loss(
    logp: torch.Tensor, mask: torch.Tensor, *, loss_type: str = "token", normalizer: float | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, int]:
    """Negative log-likelihood of the reference answer over all its real positions (text and speech).

    Token mean by default (the design; the paper averages per sequence, ``loss_type="sequence"``); returns
    (loss, count it was divided by) like `grpo_loss`. ``weights`` [B, T] weighs positions (e.g. per-codebook weights
    of a parallel-stream model); the token mean is then divided by the summed weights (pass that as ``normalizer``
    when accumulating micro-batches, see `sft_weight_total`).
    """
    if weights is None:
        return _reduce(-logp, mask.bool(), loss_type, normalizer)
    if loss_type != "token":
        raise ValueError("per-position SFT weights need loss_type='token'")
    positions = mask.bool()
    total = torch.where(positions, -logp * weights.to(logp.dtype), torch.zeros_like(logp)).sum()
    denominator = float(normalizer) if normalizer is not None else max(float(weights[positions].sum()), 1e-12)
    return total / denominator, int(positions.sum())


def sft_weight_total(mask: torch.Tensor, weights: torch.Tensor | None = None) -> float:
    """What `sft_loss` divides one batch by: its token count, or its summed weights."""
    return float(mask.sum()) if weights is None else float(weights[mask.bool()].sum())


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-position k3 estimate of KL(π ‖ π_ref) from samples of π: exp(d) − d − 1, d = ref_logp − logp (≥ 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1.0


def mode_weights(mode: str, lam: float) -> tuple[float, float]:
    """(weight of the SFT term, weight of the GRPO term) in ``mode``: (1 − λ, λ) in wavalign and fixed."""
    check_mode(mode)
    if mode in ("wavalign", "fixed"):
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {lam}")
        return 1.0 - lam, lam
    return (1.0, 0.0) if mode == "sft" else (0.0, 1.0)


def channel_counts(mask: torch.Tensor, channels: torch.Tensor) -> dict[str, int]:
    """Real positions per channel as `kl_per_channel` groups them (``speech`` includes the boundaries): the weights
    that pool its per-micro-batch means into a batch mean."""
    return {name: int(channel_mask(mask, channels, names).sum())
            for name, names in (("text", ("text",)), ("speech", ("speech",)), ("all", ("text", "speech")))}


def kl_per_channel(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, channels: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Mean k3 KL to the reference policy per channel: ``text``, ``speech`` (incl. boundaries) and ``all``.

    Token means pooled over the batch (the paper logs per-sequence means averaged over sequences). A channel with
    no position gives NaN, not 0. Differentiable; detach to log.
    """
    per_token = k3(logp, ref_logp)
    out = {}
    for name, names in (("text", ("text",)), ("speech", ("speech",)), ("all", ("text", "speech"))):
        positions = channel_mask(mask, channels, names)
        n = int(positions.sum())
        total = torch.where(positions, per_token, torch.zeros_like(per_token)).sum()
        out[name] = total / n if n else torch.full_like(total, float("nan"))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The hybrid loss
# ---------------------------------------------------------------------------------------------------------------


def check_mode(mode: str) -> str:
    if mode not in MODES:
        close = difflib.get_close_matches(mode, MODES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown mode {mode!r}{hint} (modes: {', '.join(MODES)})")
    return mode


def hybrid_loss(
    mode: str,
    lam: float = 0.0,
    *,
    logp: torch.Tensor | None = None,
    old_logp: torch.Tensor | None = None,
    adv: torch.Tensor | Sequence[float | None] | None = None,
    mask: torch.Tensor | None = None,
    channels: torch.Tensor | None = None,
    sft_logp: torch.Tensor | None = None,
    sft_mask: torch.Tensor | None = None,
    sft_weights: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    beta_text: float = 0.0,
    beta_speech: float = 0.0,
    clip_eps: float = 0.2,
    loss_type: str = "token",
    rl_normalizer: float | None = None,
    sft_normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss of one mode and its terms for logging.

    ==========  ===========================================  =====================================
    mode        loss                                         needs
    ==========  ===========================================  =====================================
    wavalign    (1 − λ) · SFT + λ · (GRPO_text + KL)          rollouts, reference answers, λ
    fixed       same, λ a constant                            rollouts, reference answers, λ
    po-all      GRPO_all + KL                                 rollouts
    po-text     GRPO_text + KL                                rollouts
    sft         SFT                                           reference answers
    ==========  ===========================================  =====================================

    ``wavalign`` and ``fixed`` compute the same thing: they differ in where λ comes from (`LambdaController`
    vs the config). The rollouts are ``logp``/``old_logp``/``adv``/``mask``/``channels`` (see `grpo_loss`); the
    reference answers are ``sft_logp``/``sft_mask`` and optional ``sft_weights`` (see `sft_loss`).

    KL: no penalty by default (the paper's ``beta = 0``). With ``ref_logp`` and ``beta_text``/``beta_speech``, a
    k3 penalty β_c · mean_c(KL) is added per channel on that channel's own positions, independently of which
    channels GRPO trains on, so text-only GRPO can still anchor speech (TRL adds its KL before the token mask,
    so masking speech out of the loss also drops speech's anchor). With ``ref_logp`` the per-channel KL is
    always measured (``kl_text``/``kl_speech``), optimised or not.

    Returns:
        (loss, terms): ``loss``, ``loss_sft``, ``loss_grpo``, ``loss_kl`` (NaN for a term the mode does not
        compute), ``w_sft`` and ``w_rl`` (the weights applied), ``n_rl`` and ``n_sft`` (the counts each term
        was divided by, before any normaliser), and ``kl_text``/``kl_speech``/``kl_all`` when ``ref_logp`` is given.
    """
    w_sft, w_rl = mode_weights(mode, lam)
    nan = float("nan")
    terms: dict[str, float] = {"w_sft": w_sft, "w_rl": w_rl}
    total = None

    if mode != "sft":
        if logp is None or adv is None or mask is None or channels is None:
            raise ValueError(f"mode {mode!r} needs the rollouts: logp, adv, mask and channels")
        rl, n_rl = grpo_loss(
            logp, old_logp, adv, mask, channels, channels_in_loss=RL_CHANNELS[mode], clip_eps=clip_eps,
            loss_type=loss_type, normalizer=rl_normalizer,
        )  # fmt: skip
        terms["loss_grpo"], terms["n_rl"] = rl.item(), n_rl
        kl_term = None
        if ref_logp is not None:
            kl = kl_per_channel(logp.detach(), ref_logp, mask, channels)
            terms.update({f"kl_{name}": value.item() for name, value in kl.items()})
            penalties = []
            for beta, name in ((beta_text, "text"), (beta_speech, "speech")):
                if beta:
                    # Normalised by the same rows as the GRPO term (None-advantage rows excluded).
                    positions = loss_positions(mask, channels, (name,), adv)
                    penalties.append(beta * _reduce(k3(logp, ref_logp), positions, "token", None)[0])
            if penalties:
                kl_term = sum(penalties)
        elif beta_text or beta_speech:
            raise ValueError("beta_text/beta_speech need ref_logp (the reference policy's log-probs)")
        terms["loss_kl"] = kl_term.item() if kl_term is not None else nan
        rl_total = rl if kl_term is None else rl + kl_term
        total = w_rl * rl_total
    else:
        terms["loss_grpo"], terms["loss_kl"], terms["n_rl"] = nan, nan, 0

    if mode in ("wavalign", "fixed", "sft"):
        if sft_logp is None or sft_mask is None:
            raise ValueError(f"mode {mode!r} needs the reference answers: sft_logp and sft_mask")
        sft, n_sft = sft_loss(sft_logp, sft_mask, loss_type=loss_type, normalizer=sft_normalizer,
                              weights=sft_weights)
        terms["loss_sft"], terms["n_sft"] = sft.item(), n_sft
        total = w_sft * sft if total is None else total + w_sft * sft
    else:
        terms["loss_sft"], terms["n_sft"] = nan, 0

    terms["loss"] = total.item()
    return total, terms
