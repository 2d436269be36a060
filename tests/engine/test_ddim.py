"""Pure DDIM maths and the alignment identities of methods.md, on random tensors."""

import pytest
import torch

from laspa import ddim

torch.manual_seed(0)
X = torch.randn(3, 4, 8, 8)
EPS = torch.randn(3, 4, 8, 8)
REF = torch.randn(1, 4, 8, 8)
ALPHA, ALPHA_PREV = 0.3, 0.6


def test_x0_and_eps_are_inverse():
    x0 = ddim.predict_x0(X, EPS, ALPHA)
    torch.testing.assert_close(ddim.eps_from_x0(X, x0, ALPHA), EPS)
    torch.testing.assert_close(ddim.forward_noise(x0, EPS, ALPHA), X)


def test_exact_reconstruction_eps_predicts_the_reference():
    e_rec = ddim.reconstruction_eps(X, REF, ALPHA, "exact")
    torch.testing.assert_close(ddim.predict_x0(X, e_rec, ALPHA), REF.expand_as(X))
    torch.testing.assert_close(ddim.reconstruction_eps(X, REF, ALPHA, "literal"), X - REF)
    with pytest.raises(ValueError, match="unknown eps form"):
        ddim.reconstruction_eps(X, REF, ALPHA, "other")


def test_inversion_step_inverts_a_ddim_step_for_a_fixed_eps():
    x_prev = ddim.ddim_step(ddim.predict_x0(X, EPS, ALPHA), EPS, ALPHA_PREV)
    torch.testing.assert_close(ddim.ddim_inversion_step(x_prev, EPS, ALPHA_PREV, ALPHA), X)


def test_v_prediction_conversion():
    x0 = torch.randn_like(X)
    x_t = ddim.forward_noise(x0, EPS, ALPHA)
    v = ALPHA**0.5 * EPS - (1 - ALPHA) ** 0.5 * x0
    torch.testing.assert_close(ddim.v_to_eps(x_t, v, ALPHA), EPS)


def test_error_alignment_in_x0_term_only_is_x0_alignment():
    """Aligned eps in the x0 prediction, the UNet's eps in the direction: x0 alignment."""
    b = torch.tensor([0.0, 0.3, 1.0]).view(-1, 1, 1, 1)
    e_rec = ddim.reconstruction_eps(X, REF, ALPHA)
    aligned_eps = ddim.blend(e_rec, EPS, b)
    via_eps = ddim.ddim_step(ddim.predict_x0(X, aligned_eps, ALPHA), EPS, ALPHA_PREV)
    x0_aligned = ddim.blend(REF, ddim.predict_x0(X, EPS, ALPHA), b)
    via_x0 = ddim.ddim_step(x0_aligned, EPS, ALPHA_PREV)
    torch.testing.assert_close(via_eps, via_x0)


def test_error_alignment_in_both_terms_mixes_two_ddim_updates():
    b = torch.tensor([0.0, 0.4, 1.0]).view(-1, 1, 1, 1)
    e_rec = ddim.reconstruction_eps(X, REF, ALPHA)

    def update(eps):
        return ddim.ddim_step(ddim.predict_x0(X, eps, ALPHA), eps, ALPHA_PREV)

    mixed = (1 - b) * update(EPS) + b * update(e_rec)
    torch.testing.assert_close(update(ddim.blend(e_rec, EPS, b)), mixed)


def test_alignment_weight_interval_and_schedules():
    beta = torch.tensor([0.3, 0.3, 1.0])
    K = torch.tensor([200.0, 200.0, 0.0])
    linear = torch.tensor([False, True, True])
    w = ddim.alignment_weight(500, beta, K, linear).flatten()
    torch.testing.assert_close(w, torch.tensor([0.3, 0.15, 0.5]))
    assert ddim.alignment_weight(200, beta, K, linear).flatten()[:2].tolist() == [0.0, 0.0]
    assert ddim.alignment_weight(-19, beta, K, linear).abs().sum() == 0  # terminal state
