"""Dynamics against MATH.md: marginal preservation (§3, §6), Theorem 2's rate (§6), tracking (§3),
and the samplers against each other (torchsde vs native; Heun vs EDM; σ-clock Euler vs k-diffusion)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfc.compiler import compile_spec
from dfc.explain import same_marginal_class
from dfc.fields import Drift, make_estimator
from dfc.solvers import Grid, Terms, solve
from dfc.moments import GaussianMarginals
from dfc.sample import make_run_target, simulate
from dfc.spec import load_spec, preset_dir
from dfc.targets import make_target

from conftest import FAMILY, FAMILY_COV, FAMILY_MEAN

MEAN = FAMILY_MEAN.tolist()
COV = FAMILY_COV.tolist()
GAUSS = f"gaussian(mean = {MEAN}, cov = {COV})"

def moments(x: torch.Tensor):
    x = x.double()
    mu = x.mean(0)
    xc = x - mu
    return mu.numpy(), (xc.T @ xc / (x.shape[0] - 1)).numpy()


def family(gmul, **run):
    return compile_spec(load_spec(FAMILY), {"gmul": str(gmul)}, run)


def run64(spec, **kw):
    target = make_run_target(spec, dtype=torch.float64)
    x, cost = simulate(spec, target, **kw)
    return x, target, cost


def test_marginal_preservation_matches_moment_odes():
    """Several g, one marginal class: same final mean and covariance, equal to MATH §6's ODEs."""
    specs = [family(g) for g in (1, 3, 8)]
    assert all(same_marginal_class(specs[0], s)[0] for s in specs[1:])
    ref = GaussianMarginals(specs[0], np.array(MEAN), np.array(COV), np.full(2, -1.0), 4 * np.eye(2))
    mu_ref, cov_ref = ref(1.5)
    results = []
    for spec in specs:
        x, _, _ = run64(spec)
        results.append(moments(x))
    n = specs[0].run.samples
    for mu, cov in results:
        # Monte-Carlo standard errors: sqrt(Σ_ii/N) for the mean, about Σ_ii sqrt(2/N) for the covariance;
        # Euler's O(dt) bias with 400 steps is below 1e-2 here.
        assert np.allclose(mu, mu_ref, atol=5 * math.sqrt(cov_ref.max() / n) + 1e-2), (mu, mu_ref)
        assert np.allclose(cov, cov_ref, atol=5 * cov_ref.max() * math.sqrt(2 / n) + 1e-2), (cov, cov_ref)
    # and the reference itself moved far from the prior (the test is not vacuous)
    assert np.abs(mu_ref - (-1.0)).max() > 0.5 and abs(cov_ref[0, 0] - 4.0) > 1.0


def test_different_classes_differ(tmp_path):
    """Changing β (not g) changes the marginal: the moment ODE sees it."""
    a = family(1)
    p = tmp_path / "other.dfs"
    p.write_text(f'spec other extends {FAMILY.stem} "another beta"\n  beta(t) = 0.2\nend\n')
    (tmp_path / FAMILY.name).write_text(FAMILY.read_text())
    b = compile_spec(load_spec(p))
    same, reasons = same_marginal_class(a, b)
    assert not same and any("beta" in r for r in reasons)
    mu_a = GaussianMarginals(a, np.array(MEAN), np.array(COV), np.full(2, -1.0), 4 * np.eye(2))(1.5)[0]
    mu_b = GaussianMarginals(b, np.array(MEAN), np.array(COV), np.full(2, -1.0), 4 * np.eye(2))(1.5)[0]
    assert np.abs(mu_a - mu_b).max() > 0.3


THEOREM2_GAN = """\
spec gan_flow extends langevin "beta = 1, g = 0: the pure GAN flow of Theorem 2"
  g2(t) = 0
  run fields = exact + gauss
end
"""


@pytest.mark.parametrize("variant", ["langevin", "gan_flow"])
def test_theorem2_rate(tmp_path, variant):
    """σ const, u = 1, f = 0, λ² = 0, β = 1, Q = N(m, cI): v(t) = c + (v0 − c) e^{−2t/c},
    μ(t) = m + (μ0 − m) e^{−t/c}, and KL(p_t‖Q) ≤ e^{−2t/c} KL(p_0‖Q) (MATH §6)."""
    (tmp_path / "gan_flow.dfs").write_text(THEOREM2_GAN)
    path = preset_dir() / "langevin.dfs" if variant == "langevin" else tmp_path / "gan_flow.dfs"
    c, m, sigma0 = 2.0, 1.5, 0.3
    q_var = c - sigma0**2  # so that Q = q_σ0 has variance c
    target = f"gaussian(mean = [{m}, {m}], cov = [[{q_var}, 0], [0, {q_var}]])"
    v0 = 16.0  # the preset's prior: normal(scale = 4)
    for t_end in (0.5, 1.0, 2.0):
        spec = compile_spec(load_spec(path), None, {"target": target, "time": f"[0, {t_end}]",
                                                   "steps": str(int(200 * t_end)), "samples": "20000"})
        x, _, _ = run64(spec)
        mu, cov = moments(x)
        v_want = c + (v0 - c) * math.exp(-2 * t_end / c)
        mu_want = m + (0 - m) * math.exp(-t_end / c)
        assert np.allclose(np.diag(cov), v_want, rtol=0.04), (variant, t_end, cov, v_want)
        assert np.allclose(mu, mu_want, atol=0.06), (variant, t_end, mu, mu_want)
        v = float(np.mean(np.diag(cov)))
        kl = lambda var, mean: 2 * 0.5 * (var / c - 1 - math.log(var / c) + (mean - m) ** 2 / c)  # noqa: E731
        assert kl(v, float(np.mean(mu))) <= math.exp(-2 * t_end / c) * kl(v0, 0.0) * 1.05


def test_ve_sde_started_at_q0_tracks_qt(tmp_path):
    """Tracking condition (MATH §3): p_0 = Q_0 gives p_t = Q_t = N(m, S + σ(t)²I) for all t."""
    (tmp_path / "from_q0.dfs").write_text('spec from_q0 extends ve_sde "started at Q_0"\n  prior target\nend\n')
    for t_end in (0.3, 0.6, 1.0):
        spec = compile_spec(load_spec(tmp_path / "from_q0.dfs"), None,
                            {"target": GAUSS, "time": f"[0, {t_end}]", "steps": "400", "samples": "20000",
                             "clock": "sigma"})
        assert spec.ir.prior.kind == "target"
        x, _, _ = run64(spec)
        mu, cov = moments(x)
        sigma = spec.at("sigma", t_end)
        want = np.array(COV) + sigma**2 * np.eye(2)
        scale = want.max()
        assert np.allclose(mu, MEAN, atol=5 * math.sqrt(scale / 20000) + 0.02 * sigma), (t_end, mu)
        assert np.allclose(cov, want, atol=6 * scale * math.sqrt(2 / 20000) + 0.02), (t_end, cov, want)


def test_nonlinear_f_is_elementwise(tmp_path):
    """f(x, t) may be any elementwise function of x: the drift adds it coordinate by coordinate."""
    (tmp_path / "nl.dfs").write_text('spec nl extends ve_sde "nonlinear weight decay"\n'
                                     '  f(x, t) = -t*tanh(x) + x^2/10\nend\n')
    spec = compile_spec(load_spec(tmp_path / "nl.dfs"), None, {"target": GAUSS})
    assert spec.f_linear is None
    target = make_run_target(spec, dtype=torch.float64)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = 0.4
    base = compile_spec(load_spec(preset_dir() / "ve_sde.dfs"), None, {"target": GAUSS})
    want = Drift(base, target)(x, t) + (-t * torch.tanh(x) + x**2 / 10)
    assert torch.allclose(Drift(spec, target)(x, t), want, rtol=1e-12, atol=1e-12)


def _ring8_spec(name, **run):
    overrides = {"target": "ring8", "samples": "500", "steps": "20"} | {k: str(v) for k, v in run.items()}
    return compile_spec(load_spec(preset_dir() / f"{name}.dfs"), None, overrides)


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_torchsde_and_native_euler_agree(method):
    """Same Brownian increments: torchsde's Euler (and Milstein: additive noise) equals the native Euler."""
    import torchsde

    from dfc.backends.torchsde_backend import integrate

    spec = _ring8_spec("diffusion_gan", clock="t", grid="uniform")
    target = make_run_target(spec, dtype=torch.float64)
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 80
    ts = spec.grid()
    bm = torchsde.BrownianInterval(t0=float(ts[0]), t1=float(ts[-1]), size=(500, 2), dtype=torch.float64, entropy=5)
    est = make_estimator(spec, target)
    a = integrate(Drift(spec, target, est), x0, ts, method, bm=bm)
    normals = lambda i: bm(float(ts[i]), float(ts[i + 1])) / math.sqrt(ts[i + 1] - ts[i])  # noqa: E731
    b = solve(Terms(Drift(spec, target, est)), "euler", x0, Grid.of(spec, ts), normals=normals)
    assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    assert float((a - x0).abs().max()) > 10  # it moved


def edm_denoiser(target, x, sigma):
    return x + sigma**2 * target.score(x, sigma)


def test_heun_is_edm_heun_without_noise():
    """ve_ode in the σ clock, Heun: exactly EDM's Algorithm 1 with the exact denoiser."""
    spec = _ring8_spec("ve_ode", clock="sigma", solver="heun", steps=12)
    target = make_run_target(spec, dtype=torch.float64)
    ts = spec.grid()
    sig = [spec.at("sigma", t) for t in ts]
    x0 = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * sig[0]
    ours = solve(Terms(Drift(spec, target)), "heun", x0, Grid.of(spec, ts))
    x = x0.clone()
    for s0, s1 in zip(sig[:-1], sig[1:]):
        d = (x - edm_denoiser(target, x, s0)) / s0
        x_next = x + (s1 - s0) * d
        if s1 != 0:
            d2 = (x_next - edm_denoiser(target, x_next, s1)) / s1
            x_next = x + (s1 - s0) * (0.5 * d + 0.5 * d2)
        x = x_next
    assert torch.allclose(ours, x, rtol=1e-9, atol=1e-9)


def test_sigma_clock_euler_is_kdiffusion_euler():
    """MATH §9: Euler on the VE ODE in the σ clock is x + (σ₁ − σ₀)(x − D(x; σ₀))/σ₀."""
    spec = _ring8_spec("ve_ode", clock="sigma", steps=8)
    target = make_run_target(spec, dtype=torch.float64)
    ts = spec.grid()
    sig = [spec.at("sigma", t) for t in ts]
    x0 = torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * sig[0]
    ours = solve(Terms(Drift(spec, target)), "euler", x0, Grid.of(spec, ts))
    x = x0.clone()
    for s0, s1 in zip(sig[:-1], sig[1:]):
        x = x + (s1 - s0) * (x - edm_denoiser(target, x, s0)) / s0
    assert torch.allclose(ours, x, rtol=1e-9, atol=1e-9)


def test_same_seed_same_samples_bit_for_bit():
    spec = _ring8_spec("diffusion_gan")
    target = make_run_target(spec)
    a, _ = simulate(spec, target)
    b, _ = simulate(spec, target)
    assert torch.equal(a, b)
    c, _ = simulate(compile_spec(spec.ir, None, {"target": "ring8", "samples": "500", "steps": "20", "seed": "1"}),
                    target)
    assert not torch.equal(a, c)


def test_karras_grid_matches_edm_sigmas():
    from dfc.grids import karras_sigmas

    spec = compile_spec(load_spec(preset_dir() / "ve_sde_song.dfs"), None, {"grid": "karras(rho = 7)", "steps": "10"})
    ts = spec.grid()
    sig = np.array([spec.at("sigma", t) for t in ts])
    assert np.allclose(sig, karras_sigmas(50, 0.01, 10, 7), rtol=1e-9)
    # on the EDM schedule a uniform t grid already is the Karras grid
    edm = compile_spec(load_spec(preset_dir() / "ve_sde.dfs"), None, {"grid": "karras(rho = 7)", "steps": "10"})
    assert np.allclose(edm.grid(), np.linspace(0, 1, 11), atol=1e-9)


def test_kde_gan_field_vanishes_when_p_equals_q():
    """Paired smoothing (MATH §5): with particles drawn from Q_t, s_Q^h − s_p is small next to s_Q − s_p
    without pairing. With h = 1 the KDE estimates the score of Q_t * N(0, I), −x/2 here, so the unpaired
    field is about −x/2 − (−x) = x/2 while the paired one is only the KDE's sampling error."""
    from dfc.fields import KDE

    spec = _ring8_spec("diffusion_gan")
    target = make_target("gaussian", {"mean": [0.0, 0.0], "cov": [[1.0, 0.0], [0.0, 1.0]]}).to(dtype=torch.float64)
    drift = Drift(spec, target, KDE(1.0))
    t = 0.9
    c = drift.coeffs(t)
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.sqrt(1 + c.sigma**2)
    s_q, gan, _ = drift.fields(x, t)
    unpaired = s_q - drift.estimator(x, t, False)[0]
    assert float(unpaired.pow(2).mean()) == pytest.approx(0.25 * float(x.pow(2).mean()), rel=0.1)
    assert float(gan.pow(2).mean()) < 0.05 * float(unpaired.pow(2).mean())


def _end_variance_ratio(b: float, ell: float, c_ratio: float) -> float:
    """MATH §6, end law: Σ̃_T/C̃_T for β = b r, λ² = ℓ r, started at Q_0 (C̃_T/C̃_0 = c_ratio)."""
    return (2 * b - ell) / (2 * b - 1) + (ell - 1) / (2 * b - 1) * c_ratio ** (2 * b - 1)


# The analytic continuation on VE (u = 1) and on VP (u ≠ 1: MATH §6 says the closed form holds in the
# scaled variables u²Σ, u²C), both started at Q_0 (VP: Q_0 = N(0, 1) in the particles' scale) with a mean of 3
# (its error shrinks by (C̃_T/C̃_0)^b).
OFF_TRACKING = {
    "ve": 'spec ac_ve extends analytic_continuation "from Q_0, shifted"\n  prior normal(mean = 3, scale = sqrt(1 + '
          'sigma_max^2))\nend\n',
    "vp": 'spec ac_vp extends vp_sde "lambda2 = -c r on VP"\n  param kappa = 0.5\n  param c = 0.5\n'
          '  beta(t) = g2(t)/2 + kappa*r(t)\n  lambda2(t) = -c*r(t)\n  prior normal(mean = 3, scale = 1)\nend\n',
}


@pytest.mark.parametrize("path", ["ve", "vp"])
@pytest.mark.parametrize("kappa,c", [(0.5, 0.5), (2.0, 0.5), (0.5, 2.0)])
def test_end_law_off_the_tracking_class_closed_form(tmp_path, path, kappa, c):
    """MATH §6 (end law): with λ² = −c r and β = (1 + κ) r (η = 1) the moment equations end at
    (2b − ℓ)/(2b − 1) times Q_T's variance, b = 1 + κ, ℓ = −c (7/4 for the preset, not 1), and the
    mean at μ̃_0 (C̃_T/C̃_0)^b; on VE and on VP."""
    from dfc.moments import end_law

    (tmp_path / f"ac_{path}.dfs").write_text(OFF_TRACKING[path])
    spec = compile_spec(load_spec(tmp_path / f"ac_{path}.dfs"), {"kappa": str(kappa), "c": str(c)})
    (s0, u0), (s1, u1) = ((spec.at("sigma", t), spec.at("u", t)) for t in (spec.t0, spec.t1))
    c_ratio = (1 + s1**2) / (1 + s0**2)  # C̃ = 1 + σ² on q = N(0, 1)
    law = end_law(spec)
    want = _end_variance_ratio(1 + kappa, -c, c_ratio)
    assert law.var_ratio == pytest.approx(want, rel=1e-5)
    assert u1 * law.mean == pytest.approx(u0 * 3 * c_ratio ** (1 + kappa), rel=1e-3, abs=1e-8)  # atol of the solve
    assert law.w2_Q == pytest.approx(math.hypot(u1 * law.mean, (math.sqrt(want) - 1) * math.sqrt(1 + s1**2)), rel=1e-6)
    assert law.w2_Q > 0.1  # biased whatever N and the steps


def test_tracking_specs_end_at_q_t():
    """ℓ = 1 (the tracking condition, MATH §3): the end law is Q_T exactly, whatever the GAN weight b; what
    is left is the solve's tolerance (rtol 1e-8) and the preset's prior N(0, σ_max²) against Q_0's 1 + σ_max²,
    forgotten by the factor (C̃_T/C̃_0)^(2b − 1)."""
    from dfc.moments import end_law

    for kappa in ("0", "0.5", "3"):
        law = end_law(compile_spec(load_spec(preset_dir() / "diffusion_gan.dfs"), {"kappa": kappa}))
        assert law.var_ratio == pytest.approx(1.0, abs=1e-6) and law.w2_Q < 1e-6 and law.mean == 0


def test_end_law_names_a_collapse(tmp_path):
    """β = 0 with λ² = r > 0: the marginal equation is anti-diffusive and its variance reaches zero
    before T (MATH §6); dfc check says so rather than print a negative variance."""
    from dfc.moments import end_law

    (tmp_path / "anti.dfs").write_text('spec anti extends ve_sde "no drift toward Q"\n  beta(t) = 0\n'
                                       '  prior normal(scale = 1)\nend\n')
    law = end_law(compile_spec(load_spec(tmp_path / "anti.dfs")))
    assert law.var <= 0 and "reaches zero before T" in law.describe()


def test_analytic_continuation_particles_end_at_the_closed_form():
    """The sampler itself (Gaussian-fit s_p, MATH §5) on q = N(0, 1) ends near 7/4 × Q_T's variance, the
    end law of MATH §6, not at q: the preset is biased at every N. The Monte-Carlo sd of a variance at
    N = 20,000 is 1.75 √(2/N) ≈ 0.018; Euler's bias at 256 log-σ steps is within it (1.74–1.78 over
    seeds at 128–2,048 steps)."""
    spec = compile_spec(load_spec(preset_dir() / "analytic_continuation.dfs"), None,
                        {"target": "gaussian(mean = [0], std = 1)", "fields": "exact + gauss", "samples": "20000",
                         "steps": "256", "clock": "logsigma", "denoise": "false"})
    x, _, _ = run64(spec)
    var = float(x.double().var())
    assert var == pytest.approx(1.75, abs=0.07), var


def test_end_law_gives_up_on_a_spec_it_cannot_afford(tmp_path, monkeypatch):
    """A β that oscillates 30,000 times per unit time is a valid spec whose moment equations cost millions of
    evaluations: the end law is a report, so past END_LAW_EVALUATIONS it is left out (None), not waited for."""
    import dfc.moments as moments

    (tmp_path / "osc.dfs").write_text('spec osc extends langevin "fast oscillation"\n'
                                      '  beta(t) = 1 + sin(30000*t)\n  g2(t) = 2 + 2*sin(30000*t)\nend\n')
    spec = compile_spec(load_spec(tmp_path / "osc.dfs"))
    monkeypatch.setattr(moments, "END_LAW_EVALUATIONS", 2_000)
    assert moments.end_law(spec) is None
    assert moments.end_law(compile_spec(load_spec(preset_dir() / "langevin.dfs"))) is not None  # within it
