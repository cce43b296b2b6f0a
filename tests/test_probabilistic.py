"""The probabilistic head: its likelihood by hand, its mean against quadrature, seeded draws,
and a tiny head trained on a field drawn from a known distribution recovering it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from dm2gal.data.transforms import FieldTransform
from dm2gal.errors import ConfigError
from dm2gal.models import OccupancyMixture, ProbabilisticNet
from dm2gal.models.mixture import SCALE_MIN
from dm2gal.train.losses import OccupancyNLL


def _raw_scale(sigma: float) -> float:
    """The raw channel value whose scale is ``sigma`` (inverse of softplus + SCALE_MIN)."""
    s = sigma - SCALE_MIN
    return s + math.log(-math.expm1(-s))


def _output(logit: float, weights: list[float], locs: list[float], sigmas: list[float], n: int = 1):
    """A ``(1, 1 + 3K, 1, 1, n)`` output holding the same parameters in every voxel."""
    values = [logit, *weights, *locs, *(_raw_scale(s) for s in sigmas)]
    return torch.tensor(values, dtype=torch.float64).reshape(1, -1, 1, 1, 1).expand(-1, -1, 1, 1, n)


def test_log_prob_and_loss_by_hand() -> None:
    """Three voxels of K = 2 components: an empty one, two occupied ones, one of them invalid."""
    logit, weights, locs, sigmas = 0.3, [0.0, math.log(3.0)], [1.0, -0.5], [0.5, 2.0]
    dist = OccupancyMixture(_output(logit, weights, locs, sigmas, 3))
    target = torch.tensor([-7.0, 1.2, 0.1]).reshape(1, 1, 1, 1, 3)
    occupied = torch.tensor([False, True, True]).reshape(target.shape)
    p, w = 1 / (1 + math.exp(-logit)), [0.25, 0.75]

    def by_hand(y: float) -> float:
        return math.log(p) + math.log(
            sum(
                wk * math.exp(-0.5 * ((y - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
                for wk, m, s in zip(w, locs, sigmas, strict=True)
            )
        )

    expected = [math.log(1 - p), by_hand(1.2), by_hand(0.1)]
    got = dist.log_prob(target, occupied).flatten().tolist()
    assert got == pytest.approx(expected, rel=1e-5)
    batch = {"target": target, "occupied": occupied, "valid": torch.tensor([True, True, False])}
    batch["valid"] = batch["valid"].reshape(target.shape)
    loss = OccupancyNLL()(_output(logit, weights, locs, sigmas, 3).float(), batch)
    assert loss.item() == pytest.approx(-(expected[0] + expected[1]) / 2, rel=1e-5)
    assert OccupancyNLL.name == "nll"


def test_bad_output_shapes_raise() -> None:
    with pytest.raises(ValueError, match=r"expected output \(B, 1 \+ 3K"):
        OccupancyMixture(torch.zeros(1, 3, 2, 2, 2))
    batch = {"target": torch.zeros(1, 1, 2, 2, 2), "occupied": torch.zeros(1, 1, 2, 2, 2) > 0}
    with pytest.raises(ValueError, match="loss 'nll': output"):
        OccupancyNLL()(torch.zeros(1, 4, 3, 3, 3), batch)
    with pytest.raises(ConfigError, match="model.components: expected an integer >= 1, got 0"):
        ProbabilisticNet(components=0)


#: each family's law of y = log10(1 + M) in scipy: location m_k, scale s_k (dex)
LAWS = {"normal": stats.norm, "gumbel": stats.gumbel_l}


def _quadrature_mean(p, w, locs, sigmas, t_mean, t_std, t_max, family="normal") -> float:
    """E[clip(10^y - 1, 0, M_max)] for y = t_std * y_n + t_mean, y_n ~ the mixture, by quad."""
    law = LAWS[family]
    total = 0.0
    for wk, m, s in zip(w, locs, sigmas, strict=True):
        mu, sd = t_std * m + t_mean, t_std * s
        top = math.log10(1 + t_max) if math.isfinite(t_max) else math.inf
        inside, _ = integrate.quad(
            lambda y, mu=mu, sd=sd: (10**y - 1) * law.pdf(y, mu, sd),
            0.0,
            min(top, mu + 12 * sd),
            epsabs=0,
            epsrel=1e-10,
            limit=200,
        )
        tail = t_max * law.sf(top, mu, sd) if math.isfinite(t_max) else 0.0
        total += wk * (inside + tail)
    return p * total


@pytest.mark.parametrize("family", sorted(LAWS))
@pytest.mark.parametrize(
    ("locs", "sigmas", "t_mean", "t_std", "t_max"),
    [
        ([1.0, -0.5], [0.2, 0.6], 2.0, 3.0, math.inf),  # lognormals far above M = 0
        ([0.1, -0.5], [0.3, 0.4], 0.5, 1.0, math.inf),  # much probability below M = 0: clipped
        ([1.0, 0.5], [0.5, 0.3], 8.0, 2.0, 3e10),  # a tail above M_max: clipped
    ],
)
def test_mean_equals_quadrature(family, locs, sigmas, t_mean, t_std, t_max) -> None:
    weights, logit = [0.0, math.log(3.0)], -0.7
    output = _output(logit, weights, locs, sigmas)
    dist = OccupancyMixture(output, t_mean, t_std, t_max, family=family)
    p = 1 / (1 + math.exp(-logit))
    expected = _quadrature_mean(p, [0.25, 0.75], locs, sigmas, t_mean, t_std, t_max, family)
    assert dist.mean().item() == pytest.approx(expected, rel=1e-6)


def test_draws_reproducible_and_seed_dependent() -> None:
    out = torch.randn(2, 7, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    dist = OccupancyMixture(out, 1.0, 2.0, 1e4)
    a = dist.sample(torch.Generator().manual_seed(1))
    b = dist.sample(torch.Generator().manual_seed(1))
    c = dist.sample(torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.shape == (2, 1, 4, 4, 4) and a.min() >= 0 and a.max() <= 1e4
    assert (a == 0).any() and (a > 0).any()


def test_mean_of_draws_converges_to_mean() -> None:
    """4096 independent draws of one mixture (occupancy 0.35): the sample mean lies within 4
    standard errors of :meth:`mean`, and the occupied fraction and the log-mass mean and
    variance within 4 standard errors of theirs."""
    logit, weights, locs, sigmas = -0.62, [0.0, 0.5], [0.4, -0.3], [0.3, 0.5]
    t_mean, t_std, t_max = 3.0, 2.0, 1e6
    dist = OccupancyMixture(_output(logit, weights, locs, sigmas, 4096), t_mean, t_std, t_max)
    draws = dist.sample(torch.Generator().manual_seed(7)).flatten().numpy()
    mean = dist.mean()[0, 0, 0, 0, 0].item()
    assert abs(draws.mean() - mean) < 4 * draws.std() / math.sqrt(draws.size)
    p = 1 / (1 + math.exp(-logit))
    occ = draws > 0
    assert abs(occ.mean() - p) < 4 * math.sqrt(p * (1 - p) / draws.size)
    w = np.exp(weights) / np.exp(weights).sum()
    mu, sd = t_std * np.array(locs) + t_mean, t_std * np.array(sigmas)
    log_mean = (w * mu).sum()  # no clipping matters here: P(y < 0) and P(y > 6) < 1e-4
    log_var = (w * (sd**2 + mu**2)).sum() - log_mean**2
    y = np.log10(1 + draws[occ])
    assert abs(y.mean() - log_mean) < 4 * math.sqrt(log_var / y.size)
    assert abs(y.var() - log_var) < 4 * log_var * math.sqrt(2 / y.size)


@pytest.mark.parametrize("family", sorted(LAWS))
def test_trained_head_recovers_known_distribution(family: str) -> None:
    """A field drawn from a known law given an input channel x ~ U(-1, 1): a voxel is occupied
    with probability sigmoid(-0.5 + 2 x) and then log10(1 + M) = 9 + 0.8 x + 0.2 e dex, with e
    standard normal (``normal``) or ln E, E ~ Exp(1) (``gumbel``). A 1^3-convolution head
    (K = 1) of that family trained by the NLL on the normalised target recovers the five
    numbers."""
    gen = torch.Generator().manual_seed(3)
    n = 10_000
    x = torch.rand(n, generator=gen) * 2 - 1
    occupied = torch.rand(n, generator=gen) < torch.sigmoid(-0.5 + 2 * x)
    if family == "gumbel":
        noise = torch.log(-torch.log1p(-torch.rand(n, generator=gen)))
    else:
        noise = torch.randn(n, generator=gen)
    log_mass = 9 + 0.8 * x + 0.2 * noise
    mass = torch.where(occupied, torch.expm1(math.log(10) * log_mass.double()), 0.0)
    t_mean, t_std = 4.0, 4.5
    transform = FieldTransform([0.0], [1.0], t_mean, t_std, log=True)
    target = transform.forward_target(mass).float()
    shape = (1, 1, 1, 1, n)
    batch = {"target": target.reshape(shape), "occupied": occupied.reshape(shape)}
    torch.manual_seed(0)
    head = torch.nn.Conv3d(1, 4, 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    loss_fn = OccupancyNLL(family=family)
    for _ in range(500):
        opt.zero_grad()
        loss_fn(head(x.reshape(shape)), batch).backward()
        opt.step()
    with torch.no_grad():
        w, b = head.weight.flatten(), head.bias
    # channels: occupancy logit, mixture weight logit (irrelevant for K = 1), location, scale
    assert (b[0].item(), w[0].item()) == pytest.approx((-0.5, 2.0), abs=0.1)
    assert (b[2].item() * t_std + t_mean, w[2].item() * t_std) == pytest.approx((9, 0.8), abs=0.02)
    dist = OccupancyMixture(head(x.reshape(shape)).detach(), t_mean, t_std, family=family)
    sigma_dex = dist.scale * t_std
    assert sigma_dex.min().item() == pytest.approx(0.2, abs=0.01)
    assert sigma_dex.max().item() == pytest.approx(0.2, abs=0.01)


def test_net_mean_and_draws_through_the_transform() -> None:
    """``infer`` and ``infer_draws`` are normalised so that the transform's inverse gives the
    mixture's mean and draws in Msun/h; the transform travels in the state dict."""
    net = ProbabilisticNet(channels=2, levels=1, convs=1, components=2).eval()
    transform = FieldTransform([0.0, 0.0], [1.0, 1.0], 2.5, 3.0, log=True, target_max=1e11)
    net.set_target_transform(transform)
    side = 2 + 2 * net.context
    x = torch.randn(2, 2, side, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        dist = net.distribution(net(x))
        mean = transform.inverse_target(net.infer(x).double())
        noise = torch.rand((2, 2, 3, 2, 2, 2), generator=torch.Generator().manual_seed(5))
        both = transform.inverse_target(net.infer_draws(x, noise).double())
        expected = torch.cat(
            [dist.mean(), dist.from_noise(noise[:, 0]), dist.from_noise(noise[:, 1])], 1
        )
    assert net(x).shape == (2, 7, 2, 2, 2) and mean.shape == (2, 1, 2, 2, 2)
    # float32 normalised values: an empty voxel comes back as ~1e-7 Msun/h
    assert torch.allclose(mean, dist.mean(), rtol=1e-5, atol=1e-5)
    assert torch.allclose(both, expected, rtol=1e-5, atol=1e-5)
    copy = ProbabilisticNet(channels=2, levels=1, convs=1, components=2)
    copy.load_state_dict(net.state_dict())
    assert copy.target_scale.tolist() == [2.5, 3.0, 1e11]
    with pytest.raises(ValueError, match="must take log10"):
        net.set_target_transform(FieldTransform([0.0], [1.0], log=False))


def test_draw_from_noise_by_hand() -> None:
    """Occupancy p = 0.5, weights (0.25, 0.75): noise (0.3, 0.6, Phi(1)) picks an occupied
    voxel of component 2, one scale above its location; noise 0.7 in channel 0 an empty one."""
    locs, sigmas, t_mean, t_std = [1.0, 0.5], [0.2, 0.3], 8.0, 2.0
    dist = OccupancyMixture(_output(0.0, [0.0, math.log(3.0)], locs, sigmas, 2), t_mean, t_std)
    phi1 = stats.norm.cdf(1.0)
    noise = torch.tensor([[0.3, 0.7], [0.6, 0.6], [phi1, phi1]], dtype=torch.float64)
    mass = dist.from_noise(noise.reshape(1, 3, 1, 1, 2)).flatten().tolist()
    expected = 10 ** (t_std * (0.5 + 0.3) + t_mean) - 1
    assert mass == pytest.approx([expected, 0.0], rel=1e-6)  # float32 parameters
    with pytest.raises(ValueError, match="noise must have shape"):
        dist.from_noise(torch.rand(1, 2, 1, 1, 2))


def test_initialise_starts_the_head_at_batch_statistics() -> None:
    """With the head's weights and bias zeroed, an initialised net predicts the batch's occupied
    fraction and its occupied voxels' mean and standard deviation, whatever the input; a second
    batch changes nothing."""
    net = ProbabilisticNet(channels=2, levels=1, convs=1, components=2).eval()
    target = torch.full((1, 1, 4, 4, 4), -1.0)
    target[0, 0, 0, 0, :2], target[0, 0, 1, 1, 1] = torch.tensor([7.0, 9.0]), 8.0
    batch = {"target": target, "occupied": target > 0}
    net.initialise(batch)
    net.initialise({"target": -target, "occupied": -target > 0})
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        side = 2 + 2 * net.context
        dist = net.distribution(net(torch.randn(1, 2, side, side, side)))
    assert torch.allclose(dist.occupancy(), torch.tensor(3 / 64))
    assert torch.allclose(dist.loc, torch.tensor(8.0))
    assert torch.allclose(dist.scale, torch.tensor(1.0), rtol=1e-5)  # std of (7, 8, 9)
    assert torch.allclose(dist.log_weights.exp(), torch.tensor(0.5))
    copy = ProbabilisticNet(channels=2, levels=1, convs=1, components=2)
    copy.load_state_dict(net.state_dict())
    assert bool(copy.initialised) and torch.equal(copy.offset, net.offset)


def test_min_occupancy_zeroes_unlikely_voxels_in_mean_and_draws_only() -> None:
    """Voxels of occupancy 0.2 and 0.6 with ``min_occupancy`` 0.3: the first's mean is 0 and no
    draw occupies it, the second's mean and draws are unchanged; the likelihood ignores it."""
    weights, locs, sigmas = [0.0], [0.5], [0.3]
    logits = [math.log(0.2 / 0.8), math.log(0.6 / 0.4)]
    out = torch.cat([_output(lg, weights, locs, sigmas) for lg in logits], dim=-1)
    plain, floored = OccupancyMixture(out, 8.0, 2.0), OccupancyMixture(out, 8.0, 2.0, math.inf, 0.3)
    assert floored.mean()[..., 0].item() == 0.0
    assert floored.mean()[..., 1].item() == pytest.approx(plain.mean()[..., 1].item(), rel=1e-12)
    noise = torch.full((1, 3, 1, 1, 2), 0.1, dtype=torch.float64)  # u = 0.1 < p for both voxels
    assert plain.from_noise(noise).flatten().gt(0).tolist() == [True, True]
    assert floored.from_noise(noise).flatten().gt(0).tolist() == [False, True]
    target, occupied = torch.full((1, 1, 1, 1, 2), 0.5), torch.ones(1, 1, 1, 1, 2, dtype=torch.bool)
    assert torch.equal(floored.log_prob(target, occupied), plain.log_prob(target, occupied))
    with pytest.raises(ValueError, match="min_occupancy"):
        OccupancyMixture(out, 8.0, 2.0, math.inf, 1.0)


def test_loss_weights_each_crop_by_its_importance_weight() -> None:
    """Two crops of one voxel each: with weights (w0, w1) the loss is the weighted mean of the
    two voxels' negative log-likelihoods."""
    out = torch.cat([_output(0.3, [0.0], [1.0], [0.5]), _output(-1.0, [0.0], [0.2], [0.8])]).float()
    target = torch.tensor([1.1, 0.4]).reshape(2, 1, 1, 1, 1)
    batch = {"target": target, "occupied": target > 0}
    per_crop = -OccupancyMixture(out).log_prob(target, batch["occupied"]).flatten()
    weighted = OccupancyNLL()(out, batch | {"weight": torch.tensor([3.0, 0.5])})
    expected = (3.0 * per_crop[0] + 0.5 * per_crop[1]) / 3.5
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)
    assert OccupancyNLL()(out, batch).item() == pytest.approx(per_crop.mean().item(), rel=1e-6)


def test_gumbel_density_and_draw_by_hand() -> None:
    """One minimum-Gumbel component: log density ``z - e^z - log s`` at ``z = (y - loc) / s``
    (integrating to 1 over y), and the draw at noise ``u`` sits at ``loc + s ln(-ln(1 - u))``;
    the loss uses the family it is given and rejects an unknown one."""
    loc, sigma, t_mean, t_std = 0.5, 0.4, 8.0, 2.0
    out = _output(0.0, [0.0], [loc], [sigma], 3)
    dist = OccupancyMixture(out, t_mean, t_std, family="gumbel")
    target = torch.tensor([0.1, 0.5, 1.2], dtype=torch.float64).reshape(1, 1, 1, 1, 3)
    z = (target.flatten() - loc) / sigma
    expected = z - torch.exp(z) - math.log(sigma)
    got = dist.log_density(target).flatten().double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    area, _ = integrate.quad(
        lambda y: math.exp(dist.log_density(torch.full((1, 1, 1, 1, 3), y)).flatten()[0].item()),
        -20,
        5,
    )
    assert area == pytest.approx(1.0, rel=1e-4)
    u = [0.1, 0.5, 0.9]
    noise = torch.tensor([[0.1] * 3, [0.5] * 3, u], dtype=torch.float64).reshape(1, 3, 1, 1, 3)
    y = [t_mean + t_std * (loc + sigma * math.log(-math.log1p(-v))) for v in u]
    expected_mass = [10**v - 1 for v in y]
    assert dist.from_noise(noise).flatten().tolist() == pytest.approx(expected_mass, rel=1e-5)
    occupied = torch.ones_like(target, dtype=torch.bool)
    nll = OccupancyNLL(family="gumbel")(out.float(), {"target": target, "occupied": occupied})
    assert nll.item() == pytest.approx(-(math.log(0.5) + expected.mean().item()), rel=1e-5)
    with pytest.raises(ConfigError, match=r"loss.family: expected one of \('normal', 'gumbel'\)"):
        OccupancyNLL(family="cauchy")
    with pytest.raises(ConfigError, match="model.family: expected one of"):
        ProbabilisticNet(family="cauchy")


def test_gumbel_initialise_matches_batch_mean_and_std() -> None:
    """A Gumbel head starts with the occupied voxels' mean and standard deviation: scale
    ``std * sqrt(6) / pi`` and location ``mean + 0.5772 * scale``."""
    net = ProbabilisticNet(channels=2, levels=1, convs=1, components=1, family="gumbel").eval()
    target = torch.full((1, 1, 4, 4, 4), -1.0)
    target[0, 0, 0, 0, :2], target[0, 0, 1, 1, 1] = torch.tensor([7.0, 9.0]), 8.0
    net.initialise({"target": target, "occupied": target > 0})
    with torch.no_grad():
        net.head.weight.zero_()
        net.head.bias.zero_()
        side = 2 + 2 * net.context
        dist = net.distribution(net(torch.randn(1, 2, side, side, side)))
    scale = math.sqrt(6.0) / math.pi
    assert torch.allclose(dist.scale, torch.tensor(scale), rtol=1e-5)
    assert torch.allclose(dist.loc, torch.tensor(8.0 + 0.5772156649 * scale), rtol=1e-6)


@pytest.mark.parametrize("family", sorted(LAWS))
def test_mean_stays_finite_and_bounded_for_extreme_components(family: str) -> None:
    """Components a network may leave anywhere where ``p`` is tiny (very broad, very narrow,
    far below 0): every mean is finite and within ``[0, M_max]``; a component all above
    ``M_max`` gives ``p * M_max``."""
    cases = [(-3.0, 50.0), (2.0, 200.0), (-50.0, 0.01), (0.5, 0.002), (9.0, 0.1)]
    t_mean, t_std, t_max = 4.0, 2.0, 1e11
    out = torch.cat([_output(0.0, [0.0], [loc], [sigma]) for loc, sigma in cases], dim=-1)
    mean = OccupancyMixture(out, t_mean, t_std, t_max, family=family).mean().flatten()
    assert torch.isfinite(mean).all()
    assert (mean >= 0).all() and (mean <= 0.5 * t_max).all()
    assert mean[-1].item() == pytest.approx(0.5 * t_max, rel=1e-6)


def test_gumbel_likelihood_far_above_the_mode_is_finite() -> None:
    """A target 1e4 scales above a Gumbel component's mode: beyond z = 20 the likelihood's
    ``exp(z)`` grows linearly, so the loss and its gradient stay finite (and huge) instead of
    overflowing; below it the density is the exact one."""
    out = _output(0.0, [0.0], [0.0], [0.01], 2).float().clone().requires_grad_(True)
    target = torch.tensor([100.0, 0.1]).reshape(1, 1, 1, 1, 2)
    batch = {"target": target, "occupied": torch.ones_like(target, dtype=torch.bool)}
    loss = OccupancyNLL(family="gumbel")(out, batch)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 1e10
    assert torch.isfinite(out.grad).all()
    z = (0.1 - 0.0) / 0.01  # exact below the cap
    log_density = OccupancyMixture(out.detach(), family="gumbel").log_density(target).flatten()
    assert log_density[1].item() == pytest.approx(z - math.exp(z) - math.log(0.01), rel=1e-5)
