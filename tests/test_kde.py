"""Population estimates of s_p at scale (MATH §5, §10): each KDE evaluation against the exact score of
the smoothed particle law, the binned KDE against the exact one (and its O(δ²) rate), the stability
floor's identity, and the floor at work on a GAN-part preset at N = 20,000."""

import math

import numpy as np
import pytest
import torch

from dfc.fields import GaussFit
from dfc.kde import KDE, binned_kde, exact_kde, scott, stable_bandwidth
from dfc.targets import GaussianMixture, make_target

F64 = torch.float64


def _rel_rms(a, b):
    return float((a - b).pow(2).sum(1).mean().sqrt() / b.pow(2).sum(1).mean().sqrt())


def _gaussian_particles(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.tensor([1.0, -2.0], dtype=F64)
    chol = torch.tensor([[1.5, 0.0], [0.6, 0.8]], dtype=F64)
    return mu + torch.randn(n, 2, generator=g, dtype=F64) @ chol.T, mu, chol @ chol.T


@pytest.mark.parametrize("method", ["exact", "binned", "subset"])
def test_kde_matches_smoothed_gaussian_score(method):
    """A KDE of Gaussian particles estimates the score of N(μ, Σ + h²I) without bias (MATH §5); its error is
    its sampling noise, of order 1/sqrt(n h^(D+2)) with n the kernels it uses (measured constant ≈ 1.5)."""
    x, mu, cov = _gaussian_particles(12_000)
    est = KDE(method=method, m=2048 if method == "subset" else None)
    s, _, h = est.query(x, x, 0.0, False)
    exact = -torch.linalg.solve(cov + h * h * torch.eye(2, dtype=F64), (x - mu).T).T
    kernels = est.subset_size(x.shape[0]) if method == "subset" else x.shape[0]
    assert _rel_rms(s, exact) < 2.5 / math.sqrt(kernels * h**4)


def test_gauss_fit_is_exact_up_to_sampling():
    x, mu, cov = _gaussian_particles(50_000, seed=1)
    s, logp, h = GaussFit().query(x, x, 0.0, True)
    exact = -torch.linalg.solve(cov, (x - mu).T).T
    assert h == 0.0 and _rel_rms(s, exact) < 5 / math.sqrt(x.shape[0])


@pytest.mark.parametrize("method", ["exact", "binned"])
def test_kde_matches_particle_mixture_score(method):
    """Particles of a mixture: the KDE's target is the mixture smoothed by h, whose score is closed form."""
    gmm = GaussianMixture([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], [0.4, 0.7, 0.5], [0.5, 0.3, 0.2])
    n = 12_000
    x = gmm.to(dtype=F64).sample(n, torch.Generator().manual_seed(2))
    s, logp, h = KDE(method=method).query(x, x, 0.0, True)
    exact = gmm.to(dtype=F64).score(x, h)
    assert _rel_rms(s, exact) < 2.5 / math.sqrt(n * h**4)
    log_exact = gmm.to(dtype=F64).log_prob(x, h)
    assert float((logp - log_exact).abs().median()) < 0.05


@pytest.mark.parametrize("dim,target", [(1, None), (2, "ring8"), (2, "checkerboard"), (3, None)])
def test_binned_kde_equals_exact_kde(dim, target):
    """Linear binning at spacing ≤ h/8: the binned KDE is the exact one up to O(δ²/h²)."""
    g = torch.Generator().manual_seed(3)
    if target:
        x = make_target(target).to(dtype=F64).sample(6000, g)
    else:
        x = torch.randn(6000, dim, generator=g, dtype=F64) * torch.linspace(1, 2, dim, dtype=F64)
    h = scott(x, x.shape[0])
    se, le = exact_kde(x, x, h, True)
    sb, lb = binned_kde(x, x, h, True)
    assert _rel_rms(sb, se) < (0.01 if dim < 3 else 0.03)
    assert float((lb - le).abs().median()) < 0.01


def test_binned_kde_error_falls_as_spacing_squared():
    x = make_target("ring8").to(dtype=F64).sample(4000, torch.Generator().manual_seed(4))
    h = scott(x, x.shape[0])
    se, _ = exact_kde(x, x, h, False)
    errs = [_rel_rms(binned_kde(x, x, h, False, points_per_h=p)[0], se) for p in (2, 4, 8)]
    rates = [errs[i] / errs[i + 1] for i in range(2)]  # halving δ divides the error by 4
    assert all(2.8 < r < 5.5 for r in rates), (errs, rates)


def test_auto_method_by_size_and_dimension():
    est = KDE()
    assert est.method_for(2000, 2) == "exact"
    assert est.method_for(20_000, 2) == "binned"
    assert est.method_for(20_000, 16) == "subset"
    assert KDE(m=512).method_for(20_000, 2) == "subset"


@pytest.mark.parametrize("gan_step,sigma_x,cfl", [(1.25, 0.05, 2.0), (1.0, 1.0, 2.0), (3.0, 1.0, 1.0),
                                                  (1.9, 1.0, 2.0), (0.4, 1.0, 2.0), (2750.0, 80.0, 2.0)])
def test_stable_bandwidth_meets_its_bound(gan_step, sigma_x, cfl):
    """MATH §10: with h = stable_bandwidth, r = 4·gan_step·max_{V ≥ σ_x²} V/(V + h²)² equals cfl where the
    floor binds, and is below cfl where it does not (brute force over V)."""
    h = stable_bandwidth(gan_step, sigma_x, cfl)
    v = np.geomspace(sigma_x**2, 1e8, 400_000)
    r = 4 * gan_step * np.max(v / (v + h * h) ** 2)
    if h > 0:
        assert r == pytest.approx(cfl, rel=1e-4)
    else:
        assert r <= cfl + 1e-9


def test_bandwidth_floor_keeps_gan_flow_stable_at_large_n():
    """diffflow_gan on ring8 at 8 NFE and N = 20,000: without the floor (cfl = 0) Scott's h is so small that
    the explicit GAN step diverges (r > 4); with it the run reaches the floor's neighbourhood."""
    from dfc.metrics import sliced_w2
    from dfc.sample import build, simulate

    target = make_target("ring8")
    ref = target.sample(20_000, torch.Generator().manual_seed(9)).double()
    out = {}
    for cfl in (0, 2):
        spec = build("diffflow_gan", run={"target": "ring8", "steps": "8", "samples": "20000", "seed": "2",
                                          "fields": f"exact + kde(cfl = {cfl})"})
        x, _ = simulate(spec, target.to(dtype=torch.float32))
        out[cfl] = sliced_w2(x.double(), ref)
    floor = sliced_w2(target.sample(20_000, torch.Generator().manual_seed(10)).double(), ref)
    assert out[2] < 1.5 * floor
    assert out[0] > 5 * floor
