"""The component-law table: each family's density, CDF, quantile and moments against SciPy's
laws (norm; gumbel_l, the minimum-Gumbel law), and its clipped mean against quadrature."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dm2gal.errors import ConfigError
from dm2gal.models.families import FAMILIES, GUMBEL, LAWS, NORMAL, family_law

SCIPY = {"normal": stats.norm, "gumbel": stats.gumbel_l}


@pytest.mark.parametrize("name", FAMILIES)
def test_density_cdf_and_quantile_are_the_standard_law(name):
    law, ref = LAWS[name], SCIPY[name]
    z = torch.linspace(-6.0, 2.5, 41, dtype=torch.float64)
    np.testing.assert_allclose(law.log_density(z).numpy(), ref.logpdf(z.numpy()), rtol=1e-10)
    np.testing.assert_allclose(law.cdf(z).numpy(), ref.cdf(z.numpy()), rtol=1e-7)
    u = torch.tensor([1e-6, 0.01, 0.3, 0.5, 0.9, 0.999], dtype=torch.float64)
    np.testing.assert_allclose(law.quantile(u).numpy(), ref.ppf(u.numpy()), rtol=1e-10)


@pytest.mark.parametrize("name", FAMILIES)
def test_from_moments_gives_the_law_of_that_mean_and_std(name):
    loc, scale = LAWS[name].from_moments(1.5, 0.4)
    mean, var = SCIPY[name].stats(loc=loc, scale=scale, moments="mv")
    assert (float(mean), math.sqrt(float(var))) == pytest.approx((1.5, 0.4), rel=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("top", [math.inf, 3e3])
def test_clipped_mean_is_the_expectation_of_the_clipped_draw(name, top):
    """E[clip(10^y - 1, 0, M_max)] with y = m + s z, by quadrature over SciPy's density."""
    m, s = 2.0, 0.5
    b = math.log10(1.0 + top) if math.isfinite(top) else math.inf
    law = SCIPY[name](loc=m, scale=s)
    inner, _ = integrate.quad(lambda y: (10.0**y - 1.0) * law.pdf(y), 0.0, min(b, m + 40 * s))
    want = inner + (top * law.sf(b) if math.isfinite(top) else 0.0)
    args = (torch.tensor([m], dtype=torch.float64), torch.tensor([s], dtype=torch.float64))
    got = LAWS[name].clipped_means(*args, torch.tensor([b], dtype=torch.float64), top)
    assert float(got[0]) == pytest.approx(want, rel=1e-8)


def test_a_family_is_chosen_once_by_name():
    assert family_law("normal", "model.family") is NORMAL
    assert family_law("gumbel", "loss.family") is GUMBEL
    with pytest.raises(ConfigError, match=r"loss.family: expected one of \('normal', 'gumbel'\)"):
        family_law("cauchy", "loss.family")
