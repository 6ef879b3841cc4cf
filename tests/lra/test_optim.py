"""The optimizer: parameter groups by name, the warmup + decay schedule, per-group learning rate and weight decay."""
import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lra import optim
from tests.lra import toy


def test_parameter_groups():
    params = {"encoder": {"block0": {"mixer": {"ssm_log_dt": 1, "kernel_c": 2, "bias": 3, "nd_query": 4},
                                     "norm0": {"scale": 5}}}, "head": {"out": {"kernel": 6}}}
    labels = optim.label_params(params)
    assert labels == {"encoder": {"block0": {"mixer": {"ssm_log_dt": "ssm", "kernel_c": "default", "bias": "no_decay",
                                                       "nd_query": "no_decay"}, "norm0": {"scale": "no_decay"}}},
                      "head": {"out": {"kernel": "default"}}}


def test_schedule_warms_up_then_decays():
    config = toy.config(**{"optimizer.warmup_steps": 10})
    sched = optim.make_schedule(config.optimizer, 1.0, 110)
    assert float(sched(0)) == 0.0 and float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0) and float(sched(110)) == pytest.approx(0.0, abs=1e-6)
    assert float(sched(60)) == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedule_matches_its_definition(schedule):
    """lr(t) = peak t / W for t < W; then cosine / linear from peak to peak * r over the remaining steps, or flat."""
    W, T, peak, r = 7, 50, 0.3, 0.1
    config = toy.config(**{"optimizer.warmup_steps": W, "optimizer.schedule": schedule,
                           "optimizer.final_lr_ratio": r})
    sched = optim.make_schedule(config.optimizer, peak, T)
    for t in range(T + 1):
        if t < W:
            want = peak * t / W
        else:
            frac = (t - W) / (T - W)
            want = {"cosine": peak * (r + (1 - r) * 0.5 * (1 + math.cos(math.pi * frac))),
                    "linear": peak * (1 - frac) + peak * r * frac, "constant": peak}[schedule]
        assert float(sched(t)) == pytest.approx(want, rel=1e-5, abs=1e-7), t


def test_groups_get_their_learning_rate_and_weight_decay():
    """One step from zero gradients moves only decayed weights (by lr * wd); a unit gradient moves each group by
    its own learning rate (Adam's first step is lr * sign(g))."""
    config = toy.config(**{"optimizer.warmup_steps": 0, "optimizer.schedule": "constant", "optimizer.lr": 0.1,
                           "optimizer.ssm_lr": 0.01, "optimizer.weight_decay": 0.5, "optimizer.grad_clip": 0.0})
    tx = optim.make_optimizer(config.optimizer, 10)
    params = {"kernel": jnp.ones(3), "bias": jnp.ones(3), "ssm_A": jnp.ones(3)}
    state = tx.init(params)
    zeros = {k: jnp.zeros(3) for k in params}
    updates, _ = tx.update(zeros, state, params)
    np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["bias"], 0.0)
    np.testing.assert_allclose(updates["ssm_A"], 0.0)
    ones = {k: jnp.ones(3) for k in params}
    updates, _ = tx.update(ones, state, params)
    np.testing.assert_allclose(updates["bias"], -0.1, rtol=1e-5)
    np.testing.assert_allclose(updates["ssm_A"], -0.01, rtol=1e-5)
    np.testing.assert_allclose(updates["kernel"], -0.1 - 0.05, rtol=1e-5)


def test_dt_group_and_decay_of_biases_and_norms_follow_the_config():
    params = {"mixer": {"ssm_log_dt": 1, "ssm_B": 2, "C": 3, "bias": 4, "nd_A_log": 5}, "norm": {"scale": 6}}
    ours = toy.config()
    s4_published = toy.config(**{"optimizer.dt_group": "base", "optimizer.decay_bias_and_norm": True})
    assert optim.label_params(params, ours.optimizer) == {
        "mixer": {"ssm_log_dt": "ssm", "ssm_B": "ssm", "C": "default", "bias": "no_decay", "nd_A_log": "no_decay"},
        "norm": {"scale": "no_decay"}}
    assert optim.label_params(params, s4_published.optimizer) == {
        "mixer": {"ssm_log_dt": "no_decay", "ssm_B": "ssm", "C": "default", "bias": "default", "nd_A_log": "no_decay"},
        "norm": {"scale": "default"}}
    with pytest.raises(ValueError, match="dt_group"):
        optim.label_params(params, toy.config(**{"optimizer.dt_group": "fast"}).optimizer)


def test_rsqrt_schedule_is_lras_constant_linear_warmup_rsqrt_decay():
    config = toy.config(**{"optimizer.warmup_steps": 1000, "optimizer.schedule": "rsqrt"})
    sched = optim.make_schedule(config.optimizer, 0.05, 5000)
    for t in (0, 1, 500, 999, 1000, 2500, 5000):
        want = 0.05 * min(1.0, t / 1000) / math.sqrt(max(t, 1000))
        assert float(sched(t)) == pytest.approx(want, rel=1e-6), t
    assert float(sched(1000)) == pytest.approx(0.05 / math.sqrt(1000), rel=1e-6)  # the peak


def test_a_decay_horizon_past_the_end_of_the_run():
    """S4 ListOps: cosine with 1,000 warmup steps set for 80,000 steps, trained for 76,800 (40 epochs)."""
    config = toy.config(**{"optimizer.warmup_steps": 1000, "optimizer.decay_steps": 79_000})
    sched = optim.make_schedule(config.optimizer, 0.01, 76_800)
    t = 76_800
    want = 0.01 * 0.5 * (1 + math.cos(math.pi * (t - 1000) / 79_000))
    assert float(sched(t)) == pytest.approx(want, rel=1e-4) and want > 1e-5
