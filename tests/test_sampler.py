import numpy as np
import pytest
import torch

from dm2gal.data.sampler import MassBinSampler, UniformSampler


def _stat(n=20000, seed=0):
    """A skewed statistic like log10(1 + M*): mostly empty, a long tail of galaxies."""
    rng = np.random.default_rng(seed)
    m = np.where(rng.random(n) < 0.7, 0.0, 10 ** rng.normal(8.0, 1.0, n))
    return np.log10(1 + m)


def test_sampled_histogram_is_flat_within_10_percent():
    stat = _stat()
    sampler = MassBinSampler(
        len(stat), stat, bins=20, samples_per_epoch=40000, seed=3, num_replicas=1, rank=0
    )
    drawn = stat[np.fromiter(sampler, dtype=np.int64)]
    edges = np.linspace(stat.min(), stat.max(), 21)
    counts_all = np.histogram(stat, edges)[0]
    counts = np.histogram(drawn, edges)[0][counts_all > 0]
    expected = len(drawn) / len(counts)
    # multinomial sigma ~ 45 at 2000 per bin: 10% is ~4.5 sigma
    assert np.abs(counts / expected - 1).max() < 0.10
    # the raw statistic is far from flat: most anchors are empty
    assert counts_all.max() / len(stat) > 0.6


def test_bins_is_a_real_parameter():
    stat = _stat()
    for bins in (5, 100):
        sampler = MassBinSampler(len(stat), stat, bins=bins, samples_per_epoch=10, num_replicas=1)
        nonempty = np.count_nonzero(np.histogram(stat, bins)[0])
        assert len(sampler.nonempty) == nonempty
        assert sampler.offsets[-1] == len(stat)


def test_ranks_draw_their_own_share_and_epochs_repeat():
    stat = _stat(2000)

    def draws(rank, epoch, seed=0):
        s = MassBinSampler(
            len(stat), stat, samples_per_epoch=101, seed=seed, num_replicas=2, rank=rank
        )
        s.set_epoch(epoch)
        return list(s)

    assert len(draws(0, 0)) == 51 == len(draws(1, 0))
    assert draws(0, 0) == draws(0, 0)
    assert draws(0, 0) != draws(1, 0)
    assert draws(0, 0) != draws(0, 1)
    assert draws(0, 0) != draws(0, 0, seed=1)


def test_uniform_without_samples_per_epoch_covers_all_anchors_across_ranks():
    ranks = [UniformSampler(10, seed=4, num_replicas=3, rank=r) for r in range(3)]
    drawn = [list(s) for s in ranks]
    assert all(len(d) == 4 for d in drawn)
    assert set().union(*drawn) == set(range(10))
    sampler = UniformSampler(10, samples_per_epoch=50, num_replicas=1)
    assert len(list(sampler)) == 50 and max(sampler) < 10


def test_defaults_to_a_single_process_world():
    assert not torch.distributed.is_initialized()
    sampler = UniformSampler(7)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"bins": 0}, "sampler.bins"),
        ({"bins": 2.5}, "sampler.bins"),
        ({"samples_per_epoch": 0}, "sampler.samples_per_epoch"),
        ({"stat": np.zeros(3)}, "stat must have shape"),
        ({"num_anchors": 0}, "no training anchors"),
        ({"rank": 2, "num_replicas": 2}, "rank"),
    ],
)
def test_bad_sampler_config_names_the_key(kwargs, key):
    args = {"num_anchors": 5, "stat": np.arange(5.0), **kwargs}
    with pytest.raises(ValueError, match=key):
        MassBinSampler(**args)


def test_importance_weights_make_the_draws_an_unbiased_average():
    """With importance weights, the weighted mean of any per-anchor quantity over the draws is
    its plain mean over all anchors (what uniform draws estimate); without, it is biased."""
    stat = _stat()
    kwargs = {"samples_per_epoch": 200000, "seed": 5, "num_replicas": 1, "rank": 0}
    sampler = MassBinSampler(len(stat), stat, bins=20, importance=True, **kwargs)
    drawn = sampler.draw()
    w = sampler.weights(drawn)
    # P_uniform / P_drawn of one anchor: (nonempty bins) x (anchors in its bin) / N
    binned = MassBinSampler.bin_of(stat, 20)
    counts = np.bincount(binned, minlength=20)
    i = drawn[0]
    assert w[0] == pytest.approx((counts > 0).sum() * counts[binned[i]] / len(stat))
    assert np.average(stat[drawn], weights=w) == pytest.approx(stat.mean(), rel=0.02)
    assert abs(stat[drawn].mean() / stat.mean() - 1) > 0.5  # the unweighted draws are biased
    assert MassBinSampler(len(stat), stat, bins=20, **kwargs).weights(drawn) is None
    assert UniformSampler(len(stat), **kwargs).weights(drawn) is None
    with pytest.raises(Exception, match="sampler.importance"):
        MassBinSampler(len(stat), stat, importance="yes", **kwargs)
