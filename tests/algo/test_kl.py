"""KL estimators, reference mixing and the refresh schedule, against hand-computed values."""

import doctest
import math

import pytest
import torch

from creason.algo import kl
from creason.algo.kl import KL_ESTIMATORS, kl_estimate, mix_reference, register_kl, should_refresh_reference

# Per token: logp, ref and log_ratio = ref - logp
#   0,  0,    0     k1 = logp - ref = 0        k2 = 0.5 * 0^2 = 0       k3 = 1 - 0 - 1 = 0
#   0,  ln 2, ln 2  k1 = -0.693147             k2 = 0.5 * 0.480453 = 0.240227
#                                              k3 = 2 - 0.693147 - 1 = 0.306853
#  -1,  0,    1     k1 = -1                    k2 = 0.5                 k3 = e - 1 - 1 = 0.718282
#   0, -1,   -1     k1 = 1                     k2 = 0.5                 k3 = 1/e + 1 - 1 = 0.367879
LOGP = torch.tensor([[0.0, 0.0, -1.0, 0.0]])
REF = torch.tensor([[0.0, math.log(2.0), 0.0, -1.0]])
EXPECTED = {
    "k1": [[0.0, -0.693147, -1.0, 1.0]],
    "k2": [[0.0, 0.240227, 0.5, 0.5]],
    "k3": [[0.0, 0.306853, 0.718282, 0.367879]],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_estimators_hand_values(name):
    torch.testing.assert_close(kl_estimate(LOGP, REF, name), torch.tensor(EXPECTED[name]), atol=1e-6, rtol=0)


def test_k3_is_nonnegative_and_k2_k3_agree_near_zero():
    gen = torch.Generator().manual_seed(0)
    logp = torch.randn(4, 9, generator=gen, dtype=torch.float64)
    ref = logp + 1e-2 * torch.randn(4, 9, generator=gen, dtype=torch.float64)
    assert (kl_estimate(logp, ref - 3.0, "k3") >= 0).all()
    # For small log-ratios x, k3 = x^2/2 + x^3/6 + ... = k2 (1 + x/3 + ...): relative gap ~ 1e-2.
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), kl_estimate(logp, ref, "k2"), atol=1e-12, rtol=3e-2)


def test_registry_errors():
    assert set(KL_ESTIMATORS) >= {"k1", "k2", "k3"}
    with pytest.raises(KeyError, match="known"):
        kl_estimate(LOGP, REF, "k4")
    with pytest.raises(ValueError, match="already registered"):
        register_kl("k3")(lambda a, b: a)


def states():
    # alpha = 0.25: w = 0.25 * [2, 0] + 0.75 * [0, 4] = [0.5, 3.0]; b = 0.25 * -2 + 0.75 * 2 = 1.0
    ref = {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([2.0]), "steps": torch.tensor([3])}
    policy = {"w": torch.tensor([2.0, 0.0]), "b": torch.tensor([-2.0]), "steps": torch.tensor([7])}
    return ref, policy


def test_mix_reference_values_and_copy_semantics():
    ref, policy = states()
    mixed = mix_reference(ref, policy, 0.25)
    assert mixed["w"].tolist() == [0.5, 3.0] and mixed["b"].tolist() == [1.0]
    assert mixed["steps"].tolist() == [3]  # integer buffers are kept from the reference
    assert ref["w"].tolist() == [0.0, 4.0]  # not in place: reference untouched


def test_mix_reference_in_place():
    ref, policy = states()
    w = ref["w"]
    mixed = mix_reference(ref, policy, 0.25, inplace=True)
    assert mixed["w"] is w and w.tolist() == [0.5, 3.0]
    assert policy["w"].tolist() == [2.0, 0.0]


def test_mix_reference_extremes_and_dtype():
    ref, policy = states()
    assert mix_reference(ref, policy, 0.0)["w"].tolist() == [0.0, 4.0]
    assert mix_reference(ref, policy, 1.0)["w"].tolist() == [2.0, 0.0]
    bf16 = mix_reference({"w": ref["w"].bfloat16()}, {"w": policy["w"]}, 0.5)["w"]
    assert bf16.dtype == torch.bfloat16 and bf16.tolist() == [1.0, 2.0]


def test_mix_reference_errors():
    ref, policy = states()
    with pytest.raises(ValueError, match="alpha"):
        mix_reference(ref, policy, 1.5)
    with pytest.raises(KeyError, match="steps"):
        mix_reference(ref, {k: v for k, v in policy.items() if k != "steps"}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        mix_reference(ref, {**policy, "w": torch.zeros(3)}, 0.5)


@pytest.mark.parametrize(
    ("step", "every", "expected"),
    [(0, 3, False), (1, 3, False), (3, 3, True), (6, 3, True), (7, 3, False), (5, 0, False), (5, -1, False),
     (1, 1, True)],
)
def test_should_refresh_reference(step, every, expected):
    assert should_refresh_reference(step, every) is expected


def test_doctests():
    result = doctest.testmod(kl)
    assert result.attempted > 0 and result.failed == 0


def test_k3_clamped_as_verl():
    # log_ratio = ref - logp, clamped to [-20, 20], then k3 clamped to [-10, 10]:
    #   +30 -> 20 -> e^20 - 20 - 1 = 4.85e8 -> 10
    #   -30 -> -20 -> e^-20 + 20 - 1 = 19.0 -> 10
    #   -5  -> e^-5 + 5 - 1 = 0.006738 + 4 = 4.006738 (inside both bounds)
    #   +1e4 -> 20 -> 10 (no overflow to inf)
    logp = torch.zeros(1, 4, requires_grad=True)
    ref = torch.tensor([[30.0, -30.0, -5.0, 1e4]])
    k3 = kl_estimate(logp, ref, "k3")
    torch.testing.assert_close(k3, torch.tensor([[10.0, 10.0, 4.006738, 10.0]]), atol=1e-6, rtol=0)
    k3.sum().backward()
    # d k3 / d logp = 1 - exp(ref - logp) inside the bounds: 1 - e^-5 = 0.993262; 0 where clamped
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, 0.993262, 0.0]]), atol=1e-6, rtol=0)
