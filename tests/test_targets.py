"""Tests for dfc.targets: exact noisy log densities and scores of the target distributions."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
from scipy.special import logsumexp as np_logsumexp

from dfc.errors import ConfigError, DataError
from dfc.targets import (
    TARGETS,
    BoxUnion,
    Checkerboard,
    DataSet,
    Gaussian,
    GaussianMixture,
    Target,
    grid25,
    load_npy,
    make_target,
    ring8,
)

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests use small tensors; on a busy machine intra-op threads only wait on each other
    (seen: 100x slower with 2 threads under load), so run them single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _all_targets() -> list[Target]:
    g = torch.Generator().manual_seed(7)
    return [
        Gaussian([1.0, -2.0], [[2.0, 0.6], [0.6, 0.5]]),
        Gaussian([0.0, 0.0, 1.0], torch.diag(torch.tensor([1.0, 0.01, 4.0]))),
        ring8(),
        grid25(),
        GaussianMixture(torch.randn(4, 3, generator=g, dtype=F64) * 3, [0.2, 0.5, 1.0, 0.05], [1.0, 2.0, 3.0, 0.5]),
        GaussianMixture(torch.randn(80, 2, generator=g, dtype=F64) * 3, torch.rand(80, generator=g, dtype=F64) + 0.1),
        GaussianMixture(torch.randn(3, 12, generator=g, dtype=F64), 0.7),
        Checkerboard(),
        BoxUnion([[[0.0, 1.0], [0.0, 2.0], [-1.0, 0.0]], [[2.0, 5.0], [-1.0, 1.0], [0.0, 0.5]]], [0.3, 0.7]),
        DataSet(torch.randn(40, 2, generator=g, dtype=F64) * 2),
        DataSet(torch.randn(300, 10, generator=g, dtype=F64)),
    ]


def _query(t: Target, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lo, hi = t.bounds()
    scale = max(max(abs(v) for v in lo), max(abs(v) for v in hi), 1.0)
    return torch.randn(n, t.dim, generator=g, dtype=F64) * scale


# ------------------------------------------------------------------------------------------
# score = grad log_prob, for every target type


@pytest.mark.parametrize("target", _all_targets(), ids=lambda t: f"{type(t).__name__}-{t.name}-{t.dim}")
@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.3, 1.0, 10.0])
def test_score_is_gradient_of_log_prob(target, sigma):
    y = _query(target, 64, seed=int(sigma * 1000) + target.dim).requires_grad_(True)
    lp = target.log_prob(y, sigma)
    (grad,) = torch.autograd.grad(lp.sum(), y)
    lp2, sc = target.log_prob_and_score(y.detach(), sigma)
    sc2 = target.score(y.detach(), sigma)
    assert lp.shape == (64,) and sc.shape == (64, target.dim)
    assert torch.isfinite(lp).all() and torch.isfinite(sc).all()
    torch.testing.assert_close(lp2, lp.detach(), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(sc2, sc, rtol=0, atol=0)
    tol = 1e-9 * (1.0 + sc.abs().max().item())
    assert (grad - sc).abs().max().item() <= tol


@pytest.mark.parametrize("target", _all_targets()[:5] + _all_targets()[7:9], ids=lambda t: t.name)
def test_tensor_sigma_matches_float_sigma_and_is_differentiable(target):
    y = _query(target, 16, seed=3)
    s = torch.tensor(0.4, dtype=F64, requires_grad=True)
    lp = target.log_prob(y, s)
    torch.testing.assert_close(lp.detach(), target.log_prob(y, 0.4), rtol=1e-13, atol=1e-10)
    # d/dsigma log q_sigma = sigma * (|score|^2 + div score) — just check it exists and is finite
    (ds,) = torch.autograd.grad(lp.sum(), s)
    assert torch.isfinite(ds)


def test_float32_agrees_with_float64():
    for t in _all_targets():
        y = _query(t, 200, seed=11)
        for sigma in (0.05, 0.5, 3.0):
            lp64, sc64 = t.log_prob_and_score(y, sigma)
            lp32, sc32 = t.log_prob_and_score(y.float(), sigma)
            assert lp32.dtype == torch.float32 and sc32.dtype == torch.float32
            assert ((lp32.double() - lp64).abs() / (1 + lp64.abs())).max() < 1e-5
            rel = (sc32.double() - sc64).abs().amax(1) / (1 + sc64.abs().amax(1))
            assert rel.max() < 1e-4, (t.name, sigma, rel.max())


def test_batch_shapes_and_dims():
    t = ring8()
    y = torch.randn(3, 5, 2, dtype=F64)
    lp, sc = t.log_prob_and_score(y, 0.2)
    assert lp.shape == (3, 5) and sc.shape == (3, 5, 2)
    torch.testing.assert_close(lp.reshape(-1), t.log_prob(y.reshape(-1, 2), 0.2))
    with pytest.raises(ConfigError, match="2 dimensions"):
        t.score(torch.zeros(4, 3), 0.1)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "x"])
def test_bad_sigma_is_config_error(bad):
    with pytest.raises(ConfigError, match="sigma"):
        ring8().score(torch.zeros(2, 2), bad)
    if not isinstance(bad, str):
        with pytest.raises(ConfigError, match="sigma"):
            Checkerboard().score(torch.zeros(2, 2), torch.tensor(bad))


# ------------------------------------------------------------------------------------------
# normalisation


def _grid_integral(t: Target, sigma: float, half: float, h: float) -> float:
    c = torch.arange(-half + h / 2, half, h, dtype=F64)
    gx, gy = torch.meshgrid(c, c, indexing="ij")
    y = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return float(t.log_prob(y, sigma).exp().sum()) * h * h


@pytest.mark.parametrize(
    "target,sigma,half",
    [(ring8(), 0.5, 8.0), (Checkerboard(), 0.3, 6.5), (grid25(), 0.4, 8.0), (Gaussian([0.5, -0.5], [[1.0, 0.3], [0.3, 0.5]]), 0.2, 8.0)],
    ids=["ring8", "checkerboard", "grid25", "gaussian"],
)
def test_density_integrates_to_one(target, sigma, half):
    # the midpoint rule is spectrally accurate for smooth densities that vanish at the border
    assert abs(_grid_integral(target, sigma, half, 0.05) - 1.0) < 1e-6


# ------------------------------------------------------------------------------------------
# Gaussian


@pytest.mark.parametrize("sigma", [0.0, 0.01, 0.7, 10.0])
def test_gaussian_matches_torch_mvn(sigma):
    mean = torch.tensor([1.0, -1.0, 0.5], dtype=F64)
    A = torch.tensor([[1.0, 0.2, 0.0], [0.3, 0.5, 0.1], [-0.2, 0.0, 2.0]], dtype=F64)
    cov = A @ A.T
    t = Gaussian(mean, cov)
    y = torch.randn(50, 3, dtype=F64, generator=torch.Generator().manual_seed(0)) * 3
    mvn = torch.distributions.MultivariateNormal(mean, cov + sigma**2 * torch.eye(3, dtype=F64))
    torch.testing.assert_close(t.log_prob(y, sigma), mvn.log_prob(y), rtol=1e-12, atol=1e-11)
    expect = -torch.linalg.solve(cov + sigma**2 * torch.eye(3, dtype=F64), (y - mean).T).T
    torch.testing.assert_close(t.score(y, sigma), expect, rtol=1e-10, atol=1e-10)
    m, c = t.to(dtype=F64).gaussian
    torch.testing.assert_close(m, mean)
    torch.testing.assert_close(c, cov)


def test_gaussian_validation():
    with pytest.raises(ConfigError, match="not symmetric"):
        Gaussian([0, 0], [[1, 0.5], [0.1, 1]])
    with pytest.raises(ConfigError, match="not positive definite"):
        Gaussian([0, 0], [[1, 2], [2, 1]])
    with pytest.raises(ConfigError, match="2x2"):
        Gaussian([0, 0], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    with pytest.raises(ConfigError, match="NaN"):
        Gaussian([0, float("nan")], [[1, 0], [0, 1]])


def test_gaussian_samples():
    t = Gaussian([2.0, -1.0], [[1.0, 0.8], [0.8, 2.0]]).to(dtype=F64)
    x = t.sample(200_000, torch.Generator().manual_seed(1))
    assert x.dtype == F64 and x.shape == (200_000, 2)
    torch.testing.assert_close(x.mean(0), torch.tensor([2.0, -1.0], dtype=F64), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=F64), atol=0.03, rtol=0)


# ------------------------------------------------------------------------------------------
# Gaussian mixtures


def _naive_gmm_logprob(means, stds, weights, y, sigma):
    v = stds**2 + sigma**2
    D = means.shape[1]
    d2 = ((y[:, None, :] - means[None]) ** 2).sum(-1)
    terms = np.log(weights) - 0.5 * D * np.log(2 * np.pi * v) - d2 / (2 * v)
    return np_logsumexp(terms, axis=1)


def test_gmm_matches_naive_formula():
    rng = np.random.default_rng(0)
    means, stds, w = rng.normal(size=(5, 3)) * 2, rng.uniform(0.1, 1, 5), rng.uniform(0.5, 2, 5)
    t = GaussianMixture(means, stds, w)
    y = rng.normal(size=(100, 3)) * 3
    for sigma in (0.0, 0.3, 2.0):
        expect = _naive_gmm_logprob(means, stds, w / w.sum(), y, sigma)
        np.testing.assert_allclose(t.log_prob(torch.from_numpy(y), sigma).numpy(), expect, rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_gmm_stable_far_away_with_tiny_std_and_sigma(dtype):
    t = GaussianMixture([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]], 0.002)
    y = torch.tensor([[100.0, -100.0], [-300.0, 1.0], [4.0, 1000.0], [4.001, 0.0]], dtype=dtype)
    lp, sc = t.log_prob_and_score(y, 0.002)
    assert torch.isfinite(lp).all() and torch.isfinite(sc).all()
    means = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]], dtype=F64)
    nearest = means[torch.cdist(y.double(), means).argmin(1)]
    v = 0.002**2 + 0.002**2
    expect = (nearest - y.double()) / v  # all mass on the nearest component
    torch.testing.assert_close(sc.double(), expect, rtol=1e-5, atol=1e-3)
    direction = torch.nn.functional.cosine_similarity(sc.double(), nearest - y.double(), dim=1)
    assert (direction > 0.9999).all()


def test_gmm_sample_moments_and_reproducibility():
    t = GaussianMixture([[0.0, 0.0], [3.0, 1.0], [-2.0, 4.0]], [0.5, 1.0, 0.3], [0.2, 0.5, 0.3]).to(dtype=F64)
    x = t.sample(200_000, torch.Generator().manual_seed(5))
    mean, cov = t.moments()
    torch.testing.assert_close(x.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.06, rtol=0)
    a = ring8().sample(1000, torch.Generator().manual_seed(42))
    b = ring8().sample(1000, torch.Generator().manual_seed(42))
    c = ring8().sample(1000, torch.Generator().manual_seed(43))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.get_default_dtype()


def test_named_mixtures():
    r = ring8()
    assert r.name == "ring8" and r.dim == 2 and r.num_components == 8
    means = r._master["means"]
    torch.testing.assert_close(means.norm(dim=1), torch.full((8,), 4.0, dtype=F64))
    torch.testing.assert_close(means[2], torch.tensor([0.0, 4.0], dtype=F64), atol=1e-12, rtol=0)
    g = grid25()
    gm = g._master["means"]
    assert gm.shape == (25, 2) and set(gm[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    assert torch.allclose(g._master["stds"], torch.tensor(0.1, dtype=F64))
    # at a mean, with tiny sigma, the log density is that of one component
    lp = g.log_prob(torch.tensor([[2.0, -4.0]], dtype=F64), 0.0)
    assert abs(lp.item() - (math.log(1 / 25) - math.log(2 * math.pi * 0.01))) < 1e-9
    assert ring8().gaussian is None
    m, c = GaussianMixture([[1.0, 2.0]], 0.5).gaussian
    assert torch.allclose(c, 0.25 * torch.eye(2, dtype=c.dtype))


def test_gmm_validation():
    with pytest.raises(ConfigError, match="stds"):
        GaussianMixture([[0, 0], [1, 1]], [1.0, 0.0])
    with pytest.raises(ConfigError, match="weights"):
        GaussianMixture([[0, 0], [1, 1]], 1.0, [1.0, -1.0])
    with pytest.raises(ConfigError, match="2 numbers"):
        GaussianMixture([[0, 0], [1, 1]], [1.0, 1.0, 1.0])
    with pytest.raises(ConfigError, match="means"):
        GaussianMixture([0, 0], 1.0)


# ------------------------------------------------------------------------------------------
# checkerboard / box unions


def _reference_box_logprob(boxes, weights, y, sigma):
    """log q_sigma by high-precision arithmetic (mpmath), term by term as in the definition."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(40):
        s = mpmath.mpf(sigma)
        out = []
        for point in y:
            total = mpmath.mpf(0)
            for box, w in zip(boxes, weights):
                f = mpmath.mpf(w) / np.prod([b - a for a, b in box])
                for d, (a, b) in enumerate(box):
                    yd = mpmath.mpf(float(point[d]))
                    lo, hi = (a - yd) / s, (b - yd) / s
                    # in the upper tail use 1 - Phi(x) = Phi(-x): ncdf(-x) stays exact there
                    f *= mpmath.ncdf(-lo) - mpmath.ncdf(-hi) if lo > 0 else mpmath.ncdf(hi) - mpmath.ncdf(lo)
                total += f
            out.append(float(mpmath.log(total)))
    return np.array(out)


def test_checkerboard_matches_high_precision_reference():
    t = Checkerboard()
    boxes = [[[-4 + 2 * i, -2 + 2 * i], [-4 + 2 * j, -2 + 2 * j]] for i in range(4) for j in range(4) if (i + j) % 2 == 0]
    y = np.random.default_rng(1).uniform(-6, 6, size=(40, 2))
    y[:3] = [[3.0044, -2.6351], [-4.3, 5.2], [2.5, 2.5]]  # deep in the tails of some cells
    for sigma in (0.05, 0.5, 3.0):
        expect = _reference_box_logprob(boxes, [1 / 8] * 8, y, sigma)
        np.testing.assert_allclose(t.log_prob(torch.from_numpy(y), sigma).numpy(), expect, rtol=1e-11)


def test_checkerboard_tiny_sigma():
    t = Checkerboard()
    even = torch.tensor([[-3.0, -3.0], [-1.0, -1.0], [1.0, -3.0], [3.5, 2.5], [1.5, 0.5]], dtype=F64)
    # cells (0,0), (1,1), (2,0), (3,3), (2,2)
    odd = torch.tensor([[-1.0, -3.0], [-3.0, -1.0], [3.0, 1.0]], dtype=F64)  # cells (1,0), (0,1), (3,2)
    for sigma in (0.0, 1e-4, 0.002):
        lp_even = t.log_prob(even, sigma)
        torch.testing.assert_close(lp_even, torch.full((5,), math.log(1 / 32), dtype=F64), rtol=0, atol=1e-12)
        assert (t.log_prob(odd, sigma) < -1e4).all()
    # odd cell centre (1,0): the density comes from the edges at distance 1 -> log q ~ -1/(2 s^2)
    assert t.log_prob(odd[:1], 0.002).item() < -1e5


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_checkerboard_far_points_finite_and_pointing_back(dtype):
    t = Checkerboard()
    y = torch.tensor([[100.0, -100.0], [-1e4, 3.0], [0.5, 50.0], [-2.0001, -3.0]], dtype=dtype)
    lp, sc = t.log_prob_and_score(y, 0.002)
    assert torch.isfinite(lp).all() and torch.isfinite(sc).all()
    s2 = 0.002**2
    # (100,-100): the corner cell (3,0) is odd; the nearest even cells (2,0) = [0,2]x[-4,-2] and
    # (3,1) = [2,4]x[-2,0] are equally far, so the score is the average of their pulls.
    torch.testing.assert_close(sc[0].double(), torch.tensor([-97 / s2, 97 / s2], dtype=F64), rtol=1e-6, atol=0)
    # (-1e4, 3): nearest even cell is (0,2) = [-4,-2]x[0,2]
    torch.testing.assert_close(sc[1].double(), torch.tensor([(1e4 - 4) / s2, -1 / s2], dtype=F64), rtol=1e-5, atol=0)
    # (0.5, 50): pulled down, and left towards cell (1,3) = [-2,0]x[2,4]
    assert sc[2, 0] < 0 and sc[2, 1] < 0
    # just inside cell (0,0) next to the odd cell (1,0): pushed back into the cell
    assert sc[3, 0] < 0


def test_checkerboard_samples_uniform_on_even_cells():
    t = Checkerboard()
    x = t.sample(80_000, torch.Generator().manual_seed(3))
    assert x.shape == (80_000, 2) and x.dtype == torch.get_default_dtype()
    i = torch.floor((x[:, 0] + 4) / 2).long()
    j = torch.floor((x[:, 1] + 4) / 2).long()
    assert ((i >= 0) & (i < 4) & (j >= 0) & (j < 4)).all()
    assert ((i + j) % 2 == 0).all()
    counts = torch.bincount(i * 4 + j, minlength=16).double() / len(x)
    even = torch.tensor([(a + b) % 2 == 0 for a in range(4) for b in range(4)])
    assert (counts[even] - 1 / 8).abs().max() < 0.006
    assert counts[~even].sum() == 0
    # uniform inside cells too: fractional positions have mean 1/2 and variance 1/12
    frac = ((x + 4) / 2) % 1
    torch.testing.assert_close(frac.mean(0).double(), torch.full((2,), 0.5, dtype=F64), atol=0.005, rtol=0)
    torch.testing.assert_close(frac.var(0).double(), torch.full((2,), 1 / 12, dtype=F64), atol=0.002, rtol=0)
    assert torch.equal(t.sample(100, torch.Generator().manual_seed(9)), t.sample(100, torch.Generator().manual_seed(9)))


def test_box_union_general_dim_and_validation():
    t = BoxUnion([[[0.0, 2.0], [0.0, 1.0], [0.0, 4.0]]])
    y = torch.tensor([[1.0, 0.5, 2.0]], dtype=F64)
    assert abs(t.log_prob(y, 1e-5).item() - math.log(1 / 8)) < 1e-12
    with pytest.raises(ConfigError, match="low < high"):
        BoxUnion([[[0.0, 0.0], [0.0, 1.0]]])
    with pytest.raises(ConfigError, match=r"\(K, D, 2\)"):
        BoxUnion([[0.0, 1.0]])
    assert Checkerboard().bounds() == ((-4.4, -4.4), (4.4, 4.4))


# ------------------------------------------------------------------------------------------
# data sets


def test_dataset_equals_gmm_with_sigma_std():
    pts = torch.randn(200, 2, dtype=F64, generator=torch.Generator().manual_seed(2)) * 3
    ds = DataSet(pts)
    y = torch.randn(500, 2, dtype=F64, generator=torch.Generator().manual_seed(3)) * 4
    for sigma in (0.05, 0.5, 4.0):
        gmm = GaussianMixture(pts, sigma)
        lp_d, sc_d = ds.log_prob_and_score(y, sigma)
        lp_g, sc_g = gmm.log_prob_and_score(y, 0.0)
        torch.testing.assert_close(lp_d, lp_g, rtol=1e-12, atol=1e-10)
        torch.testing.assert_close(sc_d, sc_g, rtol=1e-9, atol=1e-9)
    # ideal denoiser: y + sigma^2 score = posterior mean of the data points
    s = 0.5
    w = torch.softmax(-torch.cdist(y, pts) ** 2 / (2 * s * s), dim=1)
    torch.testing.assert_close(y + s * s * ds.score(y, s), w @ pts, rtol=1e-9, atol=1e-9)
    # sigma = 0 is clamped to SIGMA_FLOOR: the score snaps to the nearest point
    sc0 = ds.score(y[:5], 0.0)
    nearest = pts[torch.cdist(y[:5], pts).argmin(1)]
    torch.testing.assert_close(sc0 * 1e-12, nearest - y[:5], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dim", [2, 12])
def test_dataset_chunking_is_exact(dim):
    pts = torch.randn(700, dim, dtype=F64, generator=torch.Generator().manual_seed(4))
    y = torch.randn(333, dim, dtype=F64, generator=torch.Generator().manual_seed(5))
    whole = DataSet(pts, max_elements=2**24)
    tiny = DataSet(pts, max_elements=2000)  # 2 query rows per chunk
    lp_a, sc_a = whole.log_prob_and_score(y, 0.3)
    lp_b, sc_b = tiny.log_prob_and_score(y, 0.3)
    # equal up to the summation order torch picks for different block widths
    torch.testing.assert_close(lp_a, lp_b, rtol=1e-14, atol=0)
    torch.testing.assert_close(sc_a, sc_b, rtol=1e-13, atol=1e-13)


def test_dataset_sample_is_resampling():
    pts = torch.arange(10, dtype=F64).reshape(5, 2)
    ds = DataSet(pts).to(dtype=F64)
    x = ds.sample(5000, torch.Generator().manual_seed(0))
    rows = (x[:, None, :] == pts[None]).all(-1)
    assert rows.any(1).all()
    freq = rows.double().mean(0)
    assert (freq - 0.2).abs().max() < 0.03
    assert torch.equal(x, ds.sample(5000, torch.Generator().manual_seed(0)))


def test_dataset_validation():
    with pytest.raises(DataError, match="1 NaN and 1 infinite"):
        DataSet([[0.0, 1.0], [float("nan"), 2.0], [float("inf"), 0.0]])
    with pytest.raises(DataError, match="at least 2"):
        DataSet([[0.0, 1.0]])
    with pytest.raises(DataError, match="2-D"):
        DataSet([0.0, 1.0, 2.0])


def test_load_npy_success(tmp_path):
    arr = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    np.save(tmp_path / "pts.npy", arr)
    ds = load_npy(tmp_path / "pts.npy")
    assert ds.dim == 3 and ds.num_points == 50 and ds.name == "pts"
    np.testing.assert_array_equal(ds.points.numpy().astype(np.float32), arr)
    via_factory = make_target("pts.npy", base_dir=tmp_path)
    assert isinstance(via_factory, DataSet) and via_factory.num_points == 50


def _write(path, kind):
    if kind == "nan":
        a = np.ones((10, 2))
        a[3, 1] = np.nan
        np.save(path, a)
    elif kind == "1d":
        np.save(path, np.arange(10.0))
    elif kind == "object":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps([[1.0, 2.0], [3.0, 4.0]]))
    elif kind == "garbage":
        path.write_bytes(b"\x93NUMPY\x01\x00garbage")
    elif kind == "strings":
        np.save(path, np.array([["a", "b"], ["c", "d"]]))
    elif kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, x=np.ones((3, 2)))
    elif kind == "one_point":
        np.save(path, np.ones((1, 2)))


@pytest.mark.parametrize(
    "kind,words",
    [
        ("nan", "NaN"),
        ("1d", "2-D"),
        ("object", "Python objects"),
        ("pickle", "not a valid .npy"),
        ("garbage", "npy"),
        ("strings", "not numbers"),
        ("npz", ".npz"),
        ("one_point", "at least 2"),
        ("missing", "does not exist"),
    ],
)
def test_load_npy_errors_name_the_file(tmp_path, kind, words):
    path = tmp_path / f"bad_{kind}.npy"
    if kind != "missing":
        _write(path, kind)
    with pytest.raises(DataError) as info:
        load_npy(path)
    msg = info.value.message
    assert f"bad_{kind}.npy" in msg and words in msg


# ------------------------------------------------------------------------------------------
# factory


def test_make_target_names_and_options():
    assert set(TARGETS) == {"gaussian", "gmm", "ring8", "grid25", "checkerboard", "gauss16", "gmm16"}
    g = make_target("gaussian")
    assert isinstance(g, Gaussian) and g.dim == 2
    torch.testing.assert_close(g.to(dtype=F64).gaussian[1], torch.eye(2, dtype=F64))
    g3 = make_target("gaussian", {"dim": 3, "std": 2.0})
    torch.testing.assert_close(g3.to(dtype=F64).gaussian[1], 4 * torch.eye(3, dtype=F64))
    g2 = make_target("gaussian", {"mean": [1, 2], "cov": [[2, 0.5], [0.5, 1]]})
    torch.testing.assert_close(g2.to(dtype=F64).gaussian[0], torch.tensor([1.0, 2.0], dtype=F64))
    gd = make_target("gaussian", {"scale": [1.0, 3.0]})
    torch.testing.assert_close(gd.to(dtype=F64).gaussian[1], torch.diag(torch.tensor([1.0, 9.0], dtype=F64)))
    m = make_target("gmm", {"means": [[0, 0], [2, 2]], "stds": 0.5})
    assert isinstance(m, GaussianMixture) and m.num_components == 2
    assert make_target("RING8").name == "ring8"
    y = torch.randn(10, 2, dtype=F64)
    torch.testing.assert_close(make_target("ring8", {}).score(y, 0.1), ring8().score(y, 0.1))
    assert isinstance(make_target("checkerboard"), Checkerboard)
    assert make_target("grid25", {"std": 0.2})._master["stds"][0].item() == pytest.approx(0.2)


def test_make_target_errors():
    with pytest.raises(ConfigError) as info:
        make_target("moons")
    assert "moons" in info.value.message and "ring8" in info.value.message and ".npy" in info.value.message
    with pytest.raises(ConfigError, match="unknown option.*sigma.*ring8.*radius"):
        make_target("ring8", {"sigma": 1.0})
    with pytest.raises(ConfigError, match="takes no options"):
        make_target("checkerboard", {"size": 3})
    with pytest.raises(ConfigError, match="needs `means`"):
        make_target("gmm", {})
    with pytest.raises(ConfigError, match="disagree"):
        make_target("gaussian", {"mean": [0, 0, 0], "dim": 2})
    with pytest.raises(ConfigError, match="both `cov` and `std`"):
        make_target("gaussian", {"cov": 1.0, "std": 1.0})
    with pytest.raises(ConfigError, match="radius"):
        make_target("ring8", {"radius": -1})
    with pytest.raises(DataError, match="nope.npy"):
        make_target("nope.npy", base_dir="/nonexistent-dir")


# ------------------------------------------------------------------------------------------
# misc API


def test_to_and_bounds():
    t = ring8()
    t64 = t.to(dtype=F64)
    assert t64.dtype == F64 and t.dtype == torch.get_default_dtype()
    assert t64.sample(3, torch.Generator().manual_seed(0)).dtype == F64
    assert t64.to(device="cpu").device == torch.device("cpu")
    for tgt in (ring8(), grid25(), Checkerboard(), make_target("gaussian"), DataSet(torch.randn(1000, 2))):
        lo, hi = tgt.bounds()
        assert len(lo) == 2 and len(hi) == 2 and all(isinstance(v, float) for v in lo + hi)
        x = tgt.sample(5000, torch.Generator().manual_seed(1))
        inside = ((x >= torch.tensor(lo)) & (x <= torch.tensor(hi))).all(1).float().mean()
        assert inside > 0.99
    with pytest.raises(ConfigError):
        t.to(dtype=torch.int64)
    assert ring8().sample(0, torch.Generator()).shape == (0, 2)


def test_the_sixteen_dimensional_benchmark_targets_are_fixed():
    from dfc.targets import gauss16, gmm16

    g = make_target("gauss16").to(dtype=F64)
    m, c = g.gaussian
    assert m.shape == (16,) and g.dim == 16
    ev = torch.linalg.eigvalsh(c)
    torch.testing.assert_close(ev, torch.logspace(-1, 1, 16, dtype=F64))  # anisotropic: 0.1 ... 10
    torch.testing.assert_close(c, c.T)
    torch.testing.assert_close(gauss16().to(dtype=F64).gaussian[1], c)  # built from a fixed seed
    q = make_target("gmm16")
    means, stds, weights = q.components()
    assert q.num_components == 8 and means.shape == (8, 16) and torch.all(stds == 0.5)
    torch.testing.assert_close(weights, torch.full((8,), 1 / 8, dtype=F64))
    torch.testing.assert_close(gmm16().components()[0], means)
    assert torch.cdist(means, means).add(torch.eye(8, dtype=F64) * 1e9).min() > 10  # well separated modes
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(q.sample(5, gen()), make_target("gmm16").sample(5, gen()))
