"""Sample-quality metrics against known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfc import metrics
from dfc.errors import DataError
from dfc.metrics import (
    energy_distance,
    fit_gaussian,
    gaussian_kl,
    gaussian_w2,
    mmd,
    projection_directions,
    sliced_w2,
)


def randn(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def random_spd(d, seed):
    a = randn(d, d, seed=seed)
    return a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64)


# --------------------------------------------------------------------------- sliced W2


def test_sliced_w2_of_a_shift_is_the_projected_shift():
    a = randn(400, 3, seed=1)
    v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    got = sliced_w2(a, a + v, n_proj=2000, seed=7)
    theta = projection_directions(3, 2000, seed=7)
    exact = math.sqrt(float(((theta @ v) ** 2).mean()))
    assert got == pytest.approx(exact, rel=1e-9)
    assert got == pytest.approx(float(v.norm()) / math.sqrt(3), rel=0.05)


def test_sliced_w2_identical_sets_is_zero():
    a = randn(300, 4, seed=2)
    assert sliced_w2(a, a) == 0.0
    assert sliced_w2(a, a.clone()[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-12)


def test_sliced_w2_symmetric_and_seeded():
    a = randn(300, 2, seed=3)
    b = randn(200, 2, seed=4) * 1.5 + 0.3
    c = randn(300, 2, seed=5) + 1.0
    assert sliced_w2(a, b) == pytest.approx(sliced_w2(b, a), rel=1e-12)
    assert sliced_w2(a, c) == pytest.approx(sliced_w2(c, a), rel=1e-12)
    assert sliced_w2(a, b, seed=11) == sliced_w2(a, b, seed=11)
    assert sliced_w2(a, b, seed=11) != sliced_w2(a, b, seed=12)
    assert torch.equal(projection_directions(5, 10, 3), projection_directions(5, 10, 3))
    norms = projection_directions(5, 10, 3).norm(dim=1)
    assert torch.allclose(norms, torch.ones(10, dtype=torch.float64))


def test_sliced_w2_unequal_sizes_matches_1d_gaussian_closed_form():
    # W2(N(0, 1), N(1, 2²))² = (0 - 1)² + (1 - 2)² = 2; in 1-D every projection is ±1.
    a = randn(20_000, 1, seed=6)
    b = 1.0 + 2.0 * randn(30_000, 1, seed=7)
    assert sliced_w2(a, b, n_proj=8) == pytest.approx(math.sqrt(2.0), rel=0.03)
    # A 1-D array is read as N points in one dimension.
    flat = sliced_w2(a[:, 0], b[:, 0], n_proj=8)
    assert flat == pytest.approx(sliced_w2(a, b, n_proj=8), rel=1e-12)


def test_sliced_w2_unequal_sizes_of_duplicated_set_is_zero():
    # b is a with every point repeated twice: same empirical law, so the quantiles agree.
    a = randn(100, 2, seed=8)
    b = torch.cat([a, a])
    assert sliced_w2(a, b) == pytest.approx(0.0, abs=0.02 * sliced_w2(a, a + 1.0))


def test_blocking_does_not_change_results(monkeypatch):
    a = randn(150, 3, seed=9)
    b = randn(130, 3, seed=10) + 0.4
    full = (sliced_w2(a, b), mmd(a, b), energy_distance(a, b))
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 97)
    monkeypatch.setattr(metrics, "_SELF_ROWS", 7)  # a within-cloud sum in many triangle blocks
    monkeypatch.setattr(metrics, "_SELF", metrics._Memo(0))  # nothing remembered: all recomputed
    monkeypatch.setattr(metrics, "_SORTED", metrics._Memo(0))
    monkeypatch.setattr(metrics, "_SORTED_MAX", 0)  # projections in chunks of directions, none held whole
    small = (sliced_w2(a, b), mmd(a, b), energy_distance(a, b))
    assert small == pytest.approx(full, rel=1e-10)


def test_a_remembered_reference_gives_the_values_of_a_fresh_computation(monkeypatch):
    """Many samples measured against one reference: the reference's own terms (sorted
    projections, within-cloud sums) are computed once and reused, and every value is the one a
    computation from nothing gives, exactly (module doc, One cloud, many comparisons)."""
    ref = randn(2400, 2, seed=40)
    samples = [randn(2400, 2, seed=41 + i) * (1 + 0.1 * i) + 0.1 * i for i in range(3)]
    scales = metrics.default_mmd_scales(ref, ref)

    def measure_all():
        return [(sliced_w2_se(x, ref), mmd_block(x, ref, scales, block=600), energy_block(x, ref, block=600))
                for x in samples]

    monkeypatch.setattr(metrics, "_SELF", metrics._Memo(10_000))
    monkeypatch.setattr(metrics, "_SORTED", metrics._Memo(2))
    remembered = measure_all()
    assert len(metrics._SELF.store) == 2 * (4 + 4 * len(samples))  # MMD and energy: 4 ref blocks + 4 per sample
    fresh = []
    for x in samples:
        monkeypatch.setattr(metrics, "_SELF", metrics._Memo(0))
        monkeypatch.setattr(metrics, "_SORTED", metrics._Memo(0))
        fresh += [(sliced_w2_se(x, ref), mmd_block(x, ref, scales, block=600), energy_block(x, ref, block=600))]
    assert remembered == fresh


def test_numpy_and_torch_inputs_agree():
    a = randn(100, 2, seed=11)
    b = randn(120, 2, seed=12) + 0.5
    for f in (sliced_w2, mmd, energy_distance):
        assert f(a.numpy(), b.numpy()) == pytest.approx(f(a, b), rel=1e-12)
        assert f(a.float(), b.tolist()) == pytest.approx(f(a, b), rel=1e-5)


# --------------------------------------------------------------------------- MMD, energy


def test_mmd_small_for_same_law_and_grows_with_shift():
    a = randn(500, 2, seed=13)
    a2 = randn(500, 2, seed=14)
    assert mmd(a, a) == 0.0
    same = mmd(a, a2)
    shifted = [mmd(a, a2 + s) for s in (0.25, 0.5, 1.0)]
    assert same < 0.05
    assert same < shifted[0] < shifted[1] < shifted[2]
    assert shifted[0] > 0.1


def test_mmd_matches_direct_formula():
    a = randn(60, 3, seed=15)
    b = randn(70, 3, seed=16) + 0.3
    scales = [0.4, 1.0, 2.5]

    def k(x, y):
        d2 = torch.cdist(x, y) ** 2
        return sum(torch.exp(-d2 / (2 * s * s)) for s in scales)

    kxx, kyy, kxy = k(a, a), k(b, b), k(a, b)
    n, m = len(a), len(b)
    mmd2 = (
        (kxx.sum() - kxx.diag().sum()) / (n * (n - 1))
        + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1))
        - 2 * kxy.mean()
    )
    assert mmd(a, b, scales=scales) == pytest.approx(math.sqrt(float(mmd2)), rel=1e-9)
    # The default scales differ by factors of 2; the squaring shortcut must agree with exp.
    default = metrics.default_mmd_scales(a, b)
    assert [s / default[2] for s in default] == pytest.approx([0.25, 0.5, 1, 2, 4])
    wobble = [s * (1 + 1e-7 * i) for i, s in enumerate(default)]  # forces plain exps
    assert mmd(a, b) == pytest.approx(mmd(a, b, scales=wobble), rel=1e-5)


def test_energy_distance_of_point_masses():
    for c in (3.0, -0.5):
        a = torch.zeros(40, 1, dtype=torch.float64)
        b = torch.full((25, 1), c, dtype=torch.float64)
        assert energy_distance(a, b) == pytest.approx(math.sqrt(2 * abs(c)), rel=1e-12)
    a = torch.zeros(10, 2, dtype=torch.float64)
    b = torch.tensor([[3.0, 4.0]] * 12, dtype=torch.float64)
    assert energy_distance(a, b) == pytest.approx(math.sqrt(10.0), rel=1e-12)
    x = randn(200, 2, seed=17)
    assert energy_distance(x, x) == 0.0
    assert energy_distance(x, x + 1.0) > energy_distance(x, x + 0.5) > 0.0


# --------------------------------------------------------------------------- Gaussians


def test_gaussian_kl_matches_torch():
    d = 4
    m1, m2 = randn(d, seed=18), randn(d, seed=19)
    c1, c2 = random_spd(d, 20), random_spd(d, 21)
    ref = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(m1, c1),
        torch.distributions.MultivariateNormal(m2, c2),
    )
    assert gaussian_kl(m1, c1, m2, c2) == pytest.approx(float(ref), rel=1e-9)
    m, c = m1.numpy(), c1.numpy()
    assert gaussian_kl(m, c, m, c) == pytest.approx(0.0, abs=1e-12)


def test_gaussian_w2_commuting_covariances():
    m1 = np.array([0.0, 1.0, -2.0])
    m2 = np.array([1.0, 1.5, 0.0])
    a = np.array([1.0, 4.0, 0.25])
    b = np.array([2.0, 1.0, 0.0])  # singular is allowed
    want = math.sqrt(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert gaussian_w2(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    # Rotating both Gaussians by the same orthogonal matrix changes nothing.
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((3, 3)))
    got = gaussian_w2(q @ m1, q @ np.diag(a) @ q.T, q @ m2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(want, rel=1e-7)
    c = random_spd(3, 22).numpy()
    assert gaussian_w2(m1, c, m1, c) == pytest.approx(0.0, abs=1e-6)
    # 1-D scalars.
    assert gaussian_w2([0.0], 1.0, [1.0], 4.0) == pytest.approx(math.sqrt(2.0))


def test_fit_gaussian():
    x = randn(1000, 3, seed=23) * torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64) + 1.0
    mean, cov = fit_gaussian(x)
    assert isinstance(mean, np.ndarray) and mean.shape == (3,) and cov.shape == (3, 3)
    np.testing.assert_allclose(mean, x.numpy().mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x.numpy(), rowvar=False), rtol=1e-10)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_data_error():
    a = randn(10, 2)
    bad = a.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="`b`.*non-finite"):
        sliced_w2(a, bad)
    with pytest.raises(DataError, match="dimensions"):
        mmd(a, randn(10, 3))
    with pytest.raises(DataError, match="at least 2"):
        energy_distance(a, a[:1])
    with pytest.raises(DataError, match="shape"):
        sliced_w2(randn(2, 3, 4), a)
    with pytest.raises(DataError, match="positive"):
        mmd(a, a, scales=[1.0, -1.0])
    with pytest.raises(DataError, match="positive definite"):
        gaussian_kl(np.zeros(2), np.diag([1.0, 0.0]), np.zeros(2), np.eye(2))
    with pytest.raises(DataError, match="cov1"):
        gaussian_w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


# --------------------------------------------------------------------------- mixtures: modes and quality


def test_hq_radius_is_three_std_in_one_dimension_and_holds_the_same_mass_in_any():
    from scipy.stats import chi2

    from dfc.metrics import hq_radius

    assert hq_radius(1.0, 1) == pytest.approx(3.0, rel=1e-9)
    assert hq_radius(0.5, 1) == pytest.approx(1.5, rel=1e-9)
    for d in (2, 16):
        assert chi2.cdf((hq_radius(1.0, d) ** 2), d) == pytest.approx(math.erf(3 / math.sqrt(2)), rel=1e-9)
    assert hq_radius(1.0, 2) == pytest.approx(3.4388, abs=1e-3)


def test_mode_metrics_known_answers():
    from dfc.metrics import mode_metrics

    means = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    at_means = means.repeat(25, 1)
    assert mode_metrics(at_means, means, 0.1) == {"modes": 1.0, "hq": 1.0}
    assert mode_metrics(means[:1].repeat(100, 1), means, 0.1) == {"modes": 0.25, "hq": 1.0}  # mode collapse
    half_far = torch.cat([at_means[:50], torch.full((50, 2), 5.0)])
    assert mode_metrics(half_far, means, 0.1)["hq"] == 0.5
    # just inside / just outside the radius, per component std
    r = 0.1 * 3.4388
    edge = torch.tensor([[r * 0.999, 0.0], [r * 1.001, 0.0], [10 + 2 * r * 0.999, 0.0]])
    assert mode_metrics(edge, means, [0.1, 0.2, 0.1, 0.1])["hq"] == pytest.approx(2 / 3)
    # a mode holding fewer than min_share of its fair share is not captured
    few = torch.cat([means[:3].repeat(30, 1), means[3:].repeat(2, 1)])  # 2 of a fair 23
    assert mode_metrics(few, means, 0.1)["modes"] == 0.75
    assert mode_metrics(few, means, 0.1, min_share=0.05)["modes"] == 1.0


@pytest.mark.parametrize("dim", [2, 16])
def test_a_mixtures_own_samples_are_high_quality_at_the_one_dimensional_rate(dim):
    from dfc.metrics import mode_metrics
    from dfc.targets import GaussianMixture

    means = 20.0 * randn(6, dim, seed=dim)
    q = GaussianMixture(means, [0.5, 1.0, 0.5, 2.0, 0.5, 1.0])
    x = q.to(dtype=torch.float64).sample(40000, torch.Generator().manual_seed(5))
    got = mode_metrics(x, means, [0.5, 1.0, 0.5, 2.0, 0.5, 1.0])
    assert got["modes"] == 1.0
    assert got["hq"] == pytest.approx(0.9973, abs=0.0015)  # P(|z| <= 3), within ~4 binomial std


def test_mode_metrics_bad_input():
    from dfc.metrics import mode_metrics

    with pytest.raises(DataError, match="means"):
        mode_metrics(randn(10, 2), randn(3, 3), 1.0)
    with pytest.raises(DataError, match="stds"):
        mode_metrics(randn(10, 2), randn(3, 2), 0.0)


# --------------------------------------------------------------------------- block estimates, standard errors

from dfc.metrics import energy_block, mmd_block, root_se, sliced_w2_se  # noqa: E402


def _pair(n, m, seed, law):
    """Two samples of the same law ("same"), of shifted laws ("shift") or of scaled ones ("scale")."""
    a = randn(n, 2, seed=seed)
    b = randn(m, 2, seed=seed + 1000)
    if law == "shift":
        b = b + torch.tensor([0.3, -0.1], dtype=torch.float64)
    elif law == "scale":
        b = 1.25 * b
    return a, b


@pytest.mark.parametrize("n, m, block, law, seed", [
    (6000, 6000, 1000, "same", 0),
    (6000, 6000, 1000, "shift", 1),
    (3000, 4500, 500, "scale", 2),
])
def test_block_mmd2_agrees_with_the_quadratic_estimate_within_three_standard_errors(n, m, block, law, seed):
    a, b = _pair(n, m, seed, law)
    exact = mmd(a, b) ** 2 if law != "same" else None
    est, se = mmd_block(a, b, block=block, seed=seed)
    assert math.isfinite(se) and se > 0
    if exact is None:  # equal laws: the quadratic value may be < 0, which mmd() clips; use the unclipped one
        exact, _ = mmd_block(a, b, block=max(n, m))
    assert abs(est - exact) < 3 * se, (est, exact, se)
    if law != "same":  # and the difference is resolved: far more than 3 standard errors from 0
        assert est > 3 * se


@pytest.mark.parametrize("n, m, block, law, seed", [
    (6000, 6000, 1000, "same", 3),
    (6000, 6000, 1000, "shift", 4),
    (3000, 4500, 500, "scale", 5),
])
def test_block_energy_agrees_with_the_quadratic_estimate_within_three_standard_errors(n, m, block, law, seed):
    a, b = _pair(n, m, seed, law)
    exact, no_se = energy_block(a, b, block=max(n, m))  # one block: the quadratic estimate, unclipped
    assert math.isnan(no_se)
    assert math.sqrt(max(exact, 0.0)) == energy_distance(a, b)
    est, se = energy_block(a, b, block=block, seed=seed)
    assert math.isfinite(se) and se > 0
    assert abs(est - exact) < 3 * se, (est, exact, se)
    if law != "same":
        assert est > 3 * se


@pytest.mark.parametrize("law", ["same", "shift"])
def test_block_standard_errors_match_the_spread_over_redraws(law):
    # 30 independent redraws: the empirical std of each estimate against the mean reported SE.
    mmds, energies = [], []
    for r in range(30):
        a, b = _pair(1200, 1200, 100 + r, law)
        mmds.append(mmd_block(a, b, scales=[0.5, 1.0, 2.0], block=120, seed=r))
        energies.append(energy_block(a, b, block=120, seed=r))
    for got in (mmds, energies):
        values = np.array([v for v, _ in got])
        ses = np.array([s for _, s in got])
        ratio = values.std(ddof=1) / ses.mean()
        assert 1 / 1.5 < ratio < 1.5, ratio


def test_one_block_is_exactly_the_quadratic_estimate_and_blocks_pair_proportionally():
    a, b = _pair(300, 200, 7, "shift")
    m2, se = mmd_block(a, b)  # 300, 200 <= 1024: one block
    assert math.isnan(se) and math.sqrt(max(m2, 0.0)) == mmd(a, b)
    e2, se = energy_block(a, b, block=300)
    assert math.isnan(se) and math.sqrt(max(e2, 0.0)) == energy_distance(a, b)
    pairs = metrics._blocks(1000, 250, 100, seed=0, device=torch.device("cpu"))
    assert len(pairs) == 10
    assert {len(i) for i, _ in pairs} == {100} and {len(j) for _, j in pairs} == {25}
    assert sorted(torch.cat([i for i, _ in pairs]).tolist()) == list(range(1000))  # a partition of each sample
    assert sorted(torch.cat([j for _, j in pairs]).tolist()) == list(range(250))
    # a tiny second sample caps the count: every block keeps two of its points
    assert len(metrics._blocks(1000, 6, 100, seed=0, device=torch.device("cpu"))) == 3
    # seeded: the same seed gives the same value, another seed another split
    a, b = _pair(700, 700, 8, "shift")
    assert mmd_block(a, b, block=100, seed=3) == mmd_block(a, b, block=100, seed=3)
    assert mmd_block(a, b, block=100, seed=3) != mmd_block(a, b, block=100, seed=4)
    with pytest.raises(DataError, match="block"):
        mmd_block(a, b, block=1)
    with pytest.raises(DataError, match="block"):
        energy_block(a, b, block=2.5)


def test_root_se_is_the_delta_method_away_from_zero_and_finite_at_zero():
    assert root_se(4.0, 1e-4) == pytest.approx(1e-4 / (2 * 2.0), rel=1e-6)
    assert root_se(0.0, 1e-4) == pytest.approx(0.5 * math.sqrt(1e-4))
    assert root_se(-1e-3, 1e-4) == 0.0  # the whole interval is below 0
    assert math.isnan(root_se(1.0, math.nan))


def test_sliced_w2_se_is_the_spread_over_direction_sets():
    a = randn(500, 3, seed=30)
    b = randn(400, 3, seed=31) * torch.tensor([1.0, 1.6, 0.7], dtype=torch.float64) + 0.2
    value, se = sliced_w2_se(a, b, n_proj=64, seed=0)
    assert value == sliced_w2(a, b, n_proj=64, seed=0)  # the same number, bit for bit
    assert 0 < se < 0.2 * value
    others = np.array([sliced_w2(a, b, n_proj=64, seed=s) for s in range(1, 41)])
    assert 1 / 1.5 < others.std(ddof=1) / se < 1.5
    assert sliced_w2_se(a, a) == (0.0, 0.0)
    assert math.isnan(sliced_w2_se(a, b, n_proj=1)[1])
