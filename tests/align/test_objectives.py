"""The WavAlign objectives by hand: λ controller, group advantages, channel-masked GRPO/SFT, KL per channel."""

from __future__ import annotations

import math

import pytest
import torch

from align.objectives import (
    BOUNDARY,
    SPEECH,
    TEXT,
    LambdaController,
    flatten_advantages,
    group_advantages,
    grpo_loss,
    hybrid_loss,
    kl_per_channel,
    loss_positions,
    sft_loss,
)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# ---------------------------------------------------------------------------------------------------------------
# λ controller
# ---------------------------------------------------------------------------------------------------------------


def test_lambda_three_steps_by_hand():
    ctl = LambdaController(lam_init=0.0)
    # Step 1: group A = [1, 5, 1, 5]: Var = 4 → v = 1, g = σ(5·(5 − 3)) = σ(10); group B = [3, 3, 3, 3]: v = 0,
    # g = σ(0) = 0.5. λ_raw = 0.8 · (σ(10)·1 + 0.5·0) / 2 = 0.39998184; λ = 0.9·0 + 0.1·λ_raw.
    out = ctl.update([[1, 5, 1, 5], [3, 3, 3, 3]])
    assert out["lam_raw"] == pytest.approx(0.3999818408525191, abs=1e-12)
    assert out["lam"] == pytest.approx(0.03999818408525191, abs=1e-12)
    assert out["v_mean"] == pytest.approx(0.5)
    assert out["var_mean"] == pytest.approx(2.0)  # population variances 4 and 0 on the 1–5 scale
    assert out["g_mean"] == pytest.approx(0.7499773010656487, abs=1e-12)
    # Step 2: [2, 4, 2, 4]: Var = 1 → v = 0.25, g = σ(5); λ_raw = 0.8·0.25·σ(5) = 0.19866143;
    # λ = 0.9·0.03999818 + 0.1·0.19866143 = 0.05586451.
    out = ctl.update([[2, 4, 2, 4]])
    assert out["lam_raw"] == pytest.approx(0.19866142981514306, abs=1e-12)
    assert out["lam"] == pytest.approx(0.055864508658241024, abs=1e-12)
    # Step 3: [1, 1, 2, None] → R = [1, 1, 2] (None dropped, not 0): mean 4/3, population Var = 2/9 → v = 1/18,
    # g = σ(5·(2 − 3)) = σ(−5); λ_raw = 0.8/18·σ(−5) = 0.00029746; λ = 0.9·0.05586451 + 0.1·0.00029746.
    out = ctl.update([[1, 1, 2, None]])
    assert out["var_mean"] == pytest.approx(2 / 9)
    assert out["lam_raw"] == pytest.approx(0.00029746004107932694, abs=1e-12)
    assert out["lam"] == pytest.approx(0.05030780379652486, abs=1e-12)
    assert ctl.lam == out["lam"] and ctl.n_updates == 3


def test_lambda_first_update_is_raw_by_default():
    # The paper's state starts empty: the first λ is λ_raw itself, later ones are smoothed.
    ctl = LambdaController()
    out = ctl.update([[1, 5, 1, 5]])
    assert out["lam"] == out["lam_raw"] == pytest.approx(0.8 * sigmoid(10.0))
    out = ctl.update([[3, 3, 3, 3]])
    assert out["lam_raw"] == 0.0
    assert out["lam"] == pytest.approx(0.9 * 0.8 * sigmoid(10.0))


def test_lambda_gate_variance_clip_and_clamp():
    ctl = LambdaController()
    # The gate: max R = 3 → 0.5, max R = 1 → σ(−10); variance clipped at 1 when var_scale is small.
    assert ctl.group_terms([3, 3])[1] == pytest.approx(0.5)
    assert ctl.group_terms([1, 1])[1] == pytest.approx(sigmoid(-10.0))
    assert LambdaController(var_scale=1.0).group_terms([1, 5])[0] == 1.0  # Var = 4, 4/1 clipped to 1
    assert ctl.group_terms([1, 5])[0] == 1.0 and ctl.group_terms([2, 4])[0] == pytest.approx(0.25)
    # The clamp: resuming a λ of 0.8 under lam_max = 0.5 holds it at 0.5 (0.9·0.8 + 0.1·λ_raw = 0.72 + ...).
    small = LambdaController(lam_max=0.5)
    small.load_state_dict({"lam": 0.8, "n_updates": 10})
    assert small.update([[1, 5, 1, 5]])["lam"] == 0.5
    # With no reward at all in the batch, λ decays towards SFT and g_mean says there was no gate.
    ctl.load_state_dict({"lam": 0.4, "n_updates": 1})
    out = ctl.update([[None, None], [None]])
    assert out["lam_raw"] == 0.0 and out["lam"] == pytest.approx(0.36) and math.isnan(out["g_mean"])
    with pytest.raises(ValueError):
        ctl.update([])
    with pytest.raises(ValueError):
        LambdaController(r_min=1.0, r_max=1.0)


def test_lambda_groups_with_one_reward_contribute_zero_but_count():
    ctl = LambdaController()
    out = ctl.update([[1, 5, 1, 5], [5, None, None, None]])
    # The lone 5 has v = 0 (no comparison) but its gate σ(10) is defined; it halves λ_raw.
    assert out["lam_raw"] == pytest.approx(0.8 * sigmoid(10.0) / 2)
    assert out["v_mean"] == pytest.approx(0.5)
    assert out["var_mean"] == pytest.approx(4.0)  # the lone 5 has no variance: it is not averaged in as 0
    assert out["g_mean"] == pytest.approx(sigmoid(10.0))
    # None rewards are dropped, never read as 0: [1, None, 5] behaves as [1, 5].
    a, b = LambdaController(), LambdaController()
    assert a.update([[1, None, 5]]) == b.update([[1, 5]])


@pytest.mark.parametrize(
    ("r_min", "r_max", "rewards"),
    [
        (0.0, 1.0, [[0.0, 1.0, 0.0, 1.0], [0.25, 0.5, 0.5, 0.75], [0.1, 0.1, 0.2, None]]),
        (-1.0, 1.0, [[-1.0, 1.0, -1.0, 1.0], [-0.5, 0.0, 0.0, 0.5], [-0.8, -0.8, -0.6, None]]),
        (0.0, 10.0, [[0.0, 10.0, 0.0, 10.0], [2.5, 5.0, 5.0, 7.5], [1.0, 1.0, 2.0, None]]),
    ],
)
def test_lambda_other_reward_ranges_match_the_judge_scale(r_min, r_max, rewards):
    def to_judge(r):
        return None if r is None else 1.0 + 4.0 * (r - r_min) / (r_max - r_min)

    scaled = [[to_judge(r) for r in group] for group in rewards]
    ours, judge = LambdaController(r_min=r_min, r_max=r_max), LambdaController()
    for _ in range(3):
        got, want = ours.update(rewards), judge.update(scaled)
        for key in want:
            assert got[key] == pytest.approx(want[key], abs=1e-12)


def test_lambda_state_dict_round_trip():
    steps = [[[1, 5, 3, 2]], [[2, 2, 4, None]], [[1, 1, 1, 5]]]
    straight = LambdaController()
    for step in steps:
        straight.update(step)
    first = LambdaController()
    first.update(steps[0])
    resumed = LambdaController()
    resumed.load_state_dict(first.state_dict())
    for step in steps[1:]:
        resumed.update(step)
    assert resumed.state_dict() == straight.state_dict()


# ---------------------------------------------------------------------------------------------------------------
# Group advantages
# ---------------------------------------------------------------------------------------------------------------


def test_advantages_population_std_and_none():
    adv, stats = group_advantages([[1.0, None, 3.0, 5.0]])
    # R = [1, 3, 5]: mean 3, population std √(8/3); A = (r − 3)/(√(8/3) + 1e-4); None stays None.
    assert adv[0][1] is None
    assert adv[0][0] == pytest.approx(-1.224669875984101, abs=1e-12)
    assert adv[0][2] == 0.0
    assert adv[0][3] == pytest.approx(1.224669875984101, abs=1e-12)
    assert stats["n_none"] == 1 and stats["n_rewards"] == 3 and stats["n_zero_var"] == 0
    # unbiased=True is TRL's sample std: √4 = 2.
    adv, _ = group_advantages([[1.0, 3.0, 5.0]], unbiased=True)
    assert adv[0] == pytest.approx([-0.9999500024998749, 0.0, 0.9999500024998749], abs=1e-12)


def test_advantages_zero_variance_groups_and_floor():
    rewards = [[2.0, 2.0, 2.0, 2.0], [None, 4.0, None, None], [None, None], [1.0, 2.0], [3.0, 3.001]]
    adv, stats = group_advantages(rewards)
    assert adv[0] == [0.0, 0.0, 0.0, 0.0]
    assert adv[1] == [None, 0.0, None, None]
    assert adv[2] == [None, None]
    assert adv[3] == pytest.approx([-0.5 / 0.5001, 0.5 / 0.5001])
    assert stats["zero_var_groups"] == [0, 1, 2] and stats["n_zero_var"] == 3
    assert stats["frac_zero_var"] == pytest.approx(3 / 5) and stats["n_none"] == 5
    # Scorer noise gets ±1 without a floor; a floor of 0.1 shrinks it to ±0.005.
    assert adv[4] == pytest.approx([-0.0005 / 0.0006, 0.0005 / 0.0006], rel=1e-6)
    floored, _ = group_advantages([[3.0, 3.001]], std_floor=0.1)
    assert floored[0] == pytest.approx([-0.0005 / 0.1001, 0.0005 / 0.1001], rel=1e-6)
    flat = flatten_advantages(adv[:2])
    assert flat.shape == (8,) and torch.isnan(flat[4]) and flat[5] == 0.0


# ---------------------------------------------------------------------------------------------------------------
# Losses: masks and gradients
# ---------------------------------------------------------------------------------------------------------------

V = 11
CHANNELS = torch.tensor(
    [
        [TEXT, TEXT, BOUNDARY, SPEECH, SPEECH, BOUNDARY, TEXT],
        [TEXT, BOUNDARY, SPEECH, SPEECH, TEXT, TEXT, TEXT],
        [SPEECH, SPEECH, TEXT, TEXT, TEXT, TEXT, TEXT],
    ]
)
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)


def leaf_logits(seed: int = 0, shape=(3, 7)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, V, generator=generator, requires_grad=True)
    ids = torch.randint(0, V, shape, generator=generator)
    return logits, ids


def token_logp(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[..., None]).squeeze(-1)


def touched(logits: torch.Tensor) -> torch.Tensor:
    """Bool [B, T]: the positions whose logits got a gradient."""
    return logits.grad.abs().sum(-1) > 0


def test_grpo_text_only_gradient_reaches_text_positions_only():
    logits, ids = leaf_logits()
    adv = torch.tensor([1.0, -0.5, 2.0])
    loss, n = grpo_loss(token_logp(logits, ids), None, adv, MASK, CHANNELS, channels_in_loss=("text",))
    loss.backward()
    text = (CHANNELS == TEXT) & MASK
    assert torch.equal(touched(logits), text)
    assert n == int(text.sum()) == 7  # 3 + 2 + 2 text positions (row 1's last two are padding)
    # On-policy value: −Σ A over the text positions / their count.
    assert loss.item() == pytest.approx(-(1.0 * 3 + -0.5 * 2 + 2.0 * 2) / 7)


def test_grpo_all_channels_gradient_reaches_every_real_position():
    logits, ids = leaf_logits()
    all_channels = ("text", "speech")
    loss, n = grpo_loss(token_logp(logits, ids), None, [1.0, -0.5, 2.0], MASK, CHANNELS, channels_in_loss=all_channels)
    loss.backward()
    assert torch.equal(touched(logits), MASK) and n == int(MASK.sum())


def test_grpo_none_advantage_rows_are_left_out():
    logits, ids = leaf_logits()
    loss, n = grpo_loss(token_logp(logits, ids), None, [1.0, None, 2.0], MASK, CHANNELS, channels_in_loss=("text",))
    loss.backward()
    assert not touched(logits)[1].any() and touched(logits)[0].any()
    assert n == 3 + 2 and loss.item() == pytest.approx(-(1.0 * 3 + 2.0 * 2) / 5)


def test_grpo_gradient_is_minus_advantage_times_grad_logp():
    logits, ids = leaf_logits()
    adv = torch.tensor([1.0, -0.5, 2.0])
    logp = token_logp(logits, ids)
    loss, n = grpo_loss(logp, None, adv, MASK, CHANNELS, channels_in_loss=("text", "speech"))
    (grad,) = torch.autograd.grad(loss, logits, retain_graph=True)
    reference = -(adv[:, None] * logp * MASK).sum() / n
    (want,) = torch.autograd.grad(reference, logits)
    assert torch.allclose(grad, want, atol=1e-7)


def test_grpo_clipped_ratio_with_old_logp():
    logits, ids = leaf_logits()
    logp = token_logp(logits, ids)
    old = logp.detach() - 0.5  # ratio e^0.5 ≈ 1.65 > 1.2: clipped for A > 0 (no gradient), not for A < 0
    loss, _ = grpo_loss(logp, old, [1.0, -1.0, 1.0], MASK, CHANNELS, channels_in_loss=("text", "speech"))
    loss.backward()
    assert not touched(logits)[0].any() and not touched(logits)[2].any()
    assert torch.equal(touched(logits)[1], MASK[1])


def test_sft_gradient_reaches_all_positions():
    logits, ids = leaf_logits()
    logp = token_logp(logits, ids)
    loss, n = sft_loss(logp, MASK)
    loss.backward()
    assert torch.equal(touched(logits), MASK) and n == int(MASK.sum())
    assert loss.item() == pytest.approx((-(logp * MASK).sum() / MASK.sum()).item())


def test_sequence_normalisation_is_the_papers_per_rollout_mean():
    logits, ids = leaf_logits()
    logp = token_logp(logits, ids)
    loss, n = sft_loss(logp, MASK, loss_type="sequence")
    per_row = [-(logp[b][MASK[b]]).mean() for b in range(3)]
    assert n == 3 and loss.item() == pytest.approx((sum(per_row) / 3).item())


def rollouts(seed: int):
    logits, ids = leaf_logits(seed)
    return logits, dict(logp=token_logp(logits, ids), adv=torch.tensor([1.0, -0.5, 2.0]), mask=MASK, channels=CHANNELS)


def reference_answers(seed: int):
    logits, ids = leaf_logits(seed, shape=(2, 5))
    sft_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    return logits, dict(sft_logp=token_logp(logits, ids), sft_mask=sft_mask)


@pytest.mark.parametrize("mode", ["wavalign", "fixed"])
def test_hybrid_weighting_is_exact(mode):
    lam = 0.3
    rl_logits, rl = rollouts(1)
    sft_logits, sft = reference_answers(2)
    loss, terms = hybrid_loss(mode, lam, **rl, **sft)
    grpo, _ = grpo_loss(rl["logp"], None, rl["adv"], MASK, CHANNELS, channels_in_loss=("text",))
    sft_value, _ = sft_loss(sft["sft_logp"], sft["sft_mask"])
    assert torch.equal(loss, (1 - lam) * sft_value + lam * grpo)
    assert terms["loss"] == loss.item() and terms["w_sft"] == 0.7 and terms["w_rl"] == 0.3
    assert terms["loss_grpo"] == grpo.item() and terms["loss_sft"] == sft_value.item() and math.isnan(terms["loss_kl"])
    loss.backward()
    # The RL term trains the rollouts' text positions only; the SFT term trains every position of the answers.
    assert torch.equal(touched(rl_logits), (CHANNELS == TEXT) & MASK)
    assert torch.equal(touched(sft_logits), sft["sft_mask"])
    # And the gradient is the weighted sum of the two gradients.
    _, rl2 = rollouts(1)
    _, sft2 = reference_answers(2)
    g_grpo = torch.autograd.grad(grpo_loss(rl2["logp"], None, rl2["adv"], MASK, CHANNELS)[0], rl2["logp"])[0]
    g_hybrid = torch.autograd.grad(hybrid_loss(mode, lam, **rl2, **sft2)[0], rl2["logp"])[0]
    assert torch.allclose(g_hybrid, lam * g_grpo)


@pytest.mark.parametrize(
    ("mode", "rl_positions", "sft_trained"),
    [("po-all", MASK, False), ("po-text", (CHANNELS == TEXT) & MASK, False), ("sft", None, True)],
)
def test_hybrid_modes(mode, rl_positions, sft_trained):
    rl_logits, rl = rollouts(3)
    sft_logits, sft = reference_answers(4)
    loss, terms = hybrid_loss(mode, 0.5, **rl, **sft)  # λ is ignored outside wavalign/fixed
    loss.backward()
    if rl_positions is None:
        assert rl_logits.grad is None and math.isnan(terms["loss_grpo"]) and terms["w_rl"] == 0.0
    else:
        assert torch.equal(touched(rl_logits), rl_positions) and terms["w_rl"] == 1.0
        assert terms["loss"] == pytest.approx(terms["loss_grpo"])
    if sft_trained:
        assert torch.equal(touched(sft_logits), sft["sft_mask"]) and terms["loss"] == pytest.approx(terms["loss_sft"])
    else:
        assert sft_logits.grad is None and math.isnan(terms["loss_sft"]) and terms["w_sft"] == 0.0


def test_hybrid_rejects_unknown_modes_and_missing_inputs():
    with pytest.raises(ValueError, match="did you mean 'po-text'"):
        hybrid_loss("po_text", 0.0)
    _, rl = rollouts(0)
    with pytest.raises(ValueError, match="reference answers"):
        hybrid_loss("wavalign", 0.2, **rl)
    with pytest.raises(ValueError, match="rollouts"):
        hybrid_loss("po-all")


# ---------------------------------------------------------------------------------------------------------------
# KL per channel
# ---------------------------------------------------------------------------------------------------------------


def test_kl_per_channel_zero_when_identical_positive_otherwise():
    logits, ids = leaf_logits()
    logp = token_logp(logits, ids).detach()
    same = kl_per_channel(logp, logp.clone(), MASK, CHANNELS)
    assert all(float(value) == 0.0 for value in same.values())
    # Move the reference on speech positions only: speech KL > 0, text KL stays 0.
    speech = ((CHANNELS == SPEECH) | (CHANNELS == BOUNDARY)) & MASK
    ref = torch.where(speech, logp - 0.7, logp)
    kl = kl_per_channel(logp, ref, MASK, CHANNELS)
    assert float(kl["text"]) == 0.0 and float(kl["speech"]) > 0 and float(kl["all"]) > 0
    d = -0.7
    assert float(kl["speech"]) == pytest.approx(math.exp(d) - d - 1, rel=1e-6)
    assert float(kl["all"]) == pytest.approx(float(kl["speech"]) * int(speech.sum()) / int(MASK.sum()), rel=1e-6)
    # Measured (not optimised) through the hybrid loss too; a channel without positions is NaN, not 0.
    _, rl = rollouts(0)
    _, terms = hybrid_loss("po-text", **rl, ref_logp=rl["logp"].detach())
    assert terms["kl_text"] == 0.0 and terms["kl_speech"] == 0.0
    only_text = torch.full_like(CHANNELS, TEXT)
    assert math.isnan(float(kl_per_channel(logp, ref, MASK, only_text)["speech"]))


def test_speech_kl_penalty_anchors_speech_under_text_only_grpo():
    logits, rl = rollouts(5)
    ref = rl["logp"].detach() + 0.3
    loss, terms = hybrid_loss("po-text", **rl, ref_logp=ref, beta_speech=0.1)
    loss.backward()
    speech = ((CHANNELS == SPEECH) | (CHANNELS == BOUNDARY)) & MASK
    # GRPO reaches text, the speech KL penalty reaches speech: every real position is trained.
    assert torch.equal(touched(logits), MASK)
    assert terms["loss_kl"] == pytest.approx(0.1 * (math.exp(0.3) - 0.3 - 1), rel=1e-5) and speech.any()


# ---------------------------------------------------------------------------------------------------------------
# Gradient accumulation: token-count normalisation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", ["token", "sequence"])
def test_two_micro_batches_equal_one_big_batch(loss_type):
    logits, ids = leaf_logits(7)
    adv = torch.tensor([1.0, -0.5, 2.0])
    sft_mask = MASK.clone()

    def losses(rows, rl_normalizer=None, sft_normalizer=None):
        logp = token_logp(logits[rows], ids[rows])
        kwargs = dict(channels_in_loss=("text",), loss_type=loss_type, normalizer=rl_normalizer)
        rl, _ = grpo_loss(logp, None, adv[rows], MASK[rows], CHANNELS[rows], **kwargs)
        sft, _ = sft_loss(logp, sft_mask[rows], loss_type=loss_type, normalizer=sft_normalizer)
        return 0.6 * sft + 0.4 * rl

    big = losses(slice(0, 3))
    (g_big,) = torch.autograd.grad(big, logits)

    micro = [slice(0, 1), slice(1, 3)]
    if loss_type == "token":
        rl_total = sum(int(loss_positions(MASK[m], CHANNELS[m], ("text",), adv[m]).sum()) for m in micro)
        sft_total = sum(int(sft_mask[m].sum()) for m in micro)
    else:
        rl_total = sft_total = 3
    accumulated = torch.zeros_like(logits)
    value = 0.0
    for m in micro:
        loss = losses(m, rl_total, sft_total)
        accumulated += torch.autograd.grad(loss, logits)[0]
        value += loss.item()
    assert value == pytest.approx(big.item(), abs=1e-6)
    assert torch.allclose(accumulated, g_big, atol=1e-7)
    # Averaging per micro-batch instead (each divided by its own count) is a different loss.
    if loss_type == "token":
        naive = sum(losses(m).item() for m in micro) / len(micro)
        assert naive != pytest.approx(big.item(), abs=1e-4)
