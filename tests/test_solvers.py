"""Solvers as one seam (issue 11): the registry and its one check, the exponential integrators of
MATH §11 against their closed forms, k-diffusion sample for sample, and measured convergence orders
on a Gaussian target (exact solution from MATH §6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dfc.compiler import compile_spec
from dfc.errors import ConfigError
from dfc.sample import make_run_target, simulate
from dfc.solvers import REGISTRY, Grid, Terms, solve_run, unit
from dfc.spec import load_spec, preset_dir

S = np.array([0.5, 2.0])  # the Gaussian target's variances (diagonal) and mean
M = np.array([1.0, -1.0])
GAUSS = "gaussian(mean = [1, -1], cov = [[0.5, 0], [0, 2]])"
KARRAS = {"clock": "sigma", "grid": "karras(rho = 7)"}


def spec_for(name: str, **run):
    return compile_spec(load_spec(preset_dir() / f"{name}.dfs"), None, {"target": GAUSS} | run)


# ---------------------------------------------------------------------------------------
# The registry and its one check


def test_every_registered_solver_declares_what_it_supports():
    for (backend, name) in REGISTRY:
        u = unit(backend, name)
        assert (u.name, u.backend) == (name, backend)
        assert u.nfe_per_step >= 1 and u.noise in ("any", "none", "required") and u.clocks and u.summary
    assert unit("native", "dpmpp_3m").history == 2 and unit("native", "heun").nfe_per_step == 2


@pytest.mark.parametrize("spec,run,message,fix", [
    ("ve_sde", {"solver": "dpmpp_2m"}, "integrates ODEs", "dpmpp_2m_sde"),
    ("ve_ode", {"solver": "dpmpp_3m_sde"}, "integrates SDEs", "dpmpp_3m"),
    ("ve_sde", {"solver": "srk"}, "the torchsde backend's", "backend = torchsde"),
    ("vp_sde", {"solver": "heun", "backend": "torchsde"}, "native backend's", "backend = native"),
    ("vp_sde", {"solver": "euler", "backend": "torchsde", "clock": "sigma"}, "clock(s) t", "clock = t"),
    ("langevin", {"solver": "dpmpp_2m_sde"}, "not strictly monotone", "ddim"),
    ("ve_sde", {"solver": "deis_3m"}, "integrates ODEs", "euler or heun"),
    ("vanilla_gan", {"solver": "deis_2m"}, "not strictly monotone", "heun"),
])
def test_one_check_names_the_option_and_the_fix(spec, run, message, fix):
    with pytest.raises(ConfigError) as exc:
        spec_for(spec, **run)
    assert message in exc.value.message and fix in (exc.value.hint or ""), (exc.value.message, exc.value.hint)


def test_the_noise_an_ode_solver_refuses_is_quoted_in_the_spec_s_words():
    with pytest.raises(ConfigError) as exc:
        spec_for("ve_sde", solver="dpmpp_2m")
    assert "g2(t) = (1 + eta)*r(t), lambda2(t) = r(t), eta = 1: g² − λ² ≠ 0" in exc.value.message


@pytest.mark.parametrize("solver", ["deis_2m", "dpmpp_2m", "expint_3m"])
def test_a_sigma_that_reaches_zero_before_the_end_is_refused(tmp_path, solver):
    """σ(0.5) = 0 at an inner grid point: log σ and 1/σ² do not exist there (MATH §11, §12)."""
    (tmp_path / "zs.dfs").write_text('spec zs extends ve_ode "sigma is 0 at an inner grid point"\n'
                                     '  sigma(t) = 40*(0.5 - t)^2\n  lambda2(t) = 1\n  g2(t) = 1\n'
                                     '  run clock = t, steps = 4\nend\n')
    with pytest.raises(ConfigError, match=r"needs σ > 0 on the grid before its last point") as exc:
        compile_spec(load_spec(tmp_path / "zs.dfs"), None, {"solver": solver})
    assert "euler or heun" in exc.value.hint
    compile_spec(load_spec(tmp_path / "zs.dfs"), None, {"solver": "euler"})  # Euler never divides by σ


def test_nonlinear_f_is_refused_at_its_line(tmp_path):
    (tmp_path / "nl.dfs").write_text('spec nl extends ve_ode "nonlinear weight decay"\n'
                                     '  f(x, t) = -tanh(x)\nend\n')
    with pytest.raises(ConfigError) as exc:
        compile_spec(load_spec(tmp_path / "nl.dfs"), None, {"solver": "ddim"})
    assert "not linear in x" in exc.value.message and exc.value.span.line == 2


def test_every_preset_runs_with_ddim():
    """The first-order exponential integrator on every preset (GAN presets included): finite samples."""
    for path in sorted(preset_dir().glob("*.dfs")):
        spec = compile_spec(load_spec(path), None, {"target": "ring8", "samples": 100, "steps": 4, "solver": "ddim"})
        x, cost = simulate(spec, make_run_target(spec))
        assert torch.isfinite(x).all() and cost["nfe"] == 4 + spec.run.denoise, path.stem


def test_typed_overrides_are_validated_once_per_key():
    from dfc.runconfig import run_config

    cfg = run_config((), {"steps": "16", "denoise": "true", "solver": "dpmpp_2m", "grid": "karras(rho = 5)"})
    assert (cfg.steps, cfg.denoise, cfg.solver, cfg.grid, cfg.rho) == (16, True, "dpmpp_2m", "karras", 5.0)
    assert run_config((), {"steps": 16}) == run_config((), {"steps": "16"})
    with pytest.raises(ConfigError, match="whole number"):
        run_config((), {"steps": "2.5"})
    with pytest.raises(ConfigError, match="true or false"):
        run_config((), {"denoise": "yes"})


# ---------------------------------------------------------------------------------------
# MATH §11: the weights against their closed forms on the score-based family


@pytest.mark.parametrize("name", ["ve_ode", "ve_sde", "vp_sde"])
def test_step_weights_match_the_closed_forms(name):
    from dfc.backends.exponential import linear_part, step_weights

    spec = spec_for(name, steps=7, **KARRAS)
    lin = linear_part(spec)
    ts = spec.grid()
    sw = step_weights(lin, ts)
    sig, u = lin.values("sigma", ts), lin.values("u", ts)
    eta = float(spec.params[next(k for k in spec.params if str(k) == "eta")])
    h = np.log(sig[:-1] / sig[1:])
    H = (1 + eta) * h
    E = -np.expm1(-H)
    u0, u1 = u[:-1], u[1:]
    assert np.allclose(sw.phi, u0 / u1 * np.exp(-H), rtol=1e-11, atol=0)
    want = np.stack([E, 1 - E / H, 1 - 2 / H + 2 * E / H**2], axis=1) / u1[:, None]
    assert np.allclose(sw.W, want, rtol=1e-10, atol=1e-14)
    assert np.allclose(sw.sd, sig[1:] / u1 * np.sqrt(-np.expm1(-2 * eta * h)), rtol=1e-10, atol=1e-14)


def test_ddim_is_euler_in_the_sigma_clock_on_the_ve_ode():
    """MATH §11: x_1 = (σ_1/σ_0) x_0 + (1 − σ_1/σ_0) D_0, Euler's step in the σ clock (MATH §9)."""
    outs = {}
    for solver in ("euler", "ddim"):
        spec = spec_for("ve_ode", solver=solver, steps=9, samples=300, **KARRAS)
        outs[solver], _ = simulate(spec, make_run_target(spec, dtype=torch.float64))
    assert torch.allclose(outs["euler"], outs["ddim"], rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------------------------------
# Parity with k-diffusion, sample for sample


def _kdiffusion():
    from dfc.peers import kdiffusion_sampling

    kd = kdiffusion_sampling()
    if kd is None:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion tqdm): no parity check")
    return kd


@pytest.mark.parametrize("ours,theirs,preset", [
    ("dpmpp_2m", "sample_dpmpp_2m", "ve_ode"),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", "ve_sde"),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", "ve_sde"),
    ("dpmpp_3m", "sample_dpmpp_3m_sde", "ve_ode"),  # k-diffusion's 3M SDE with eta = 0 is the ODE form
])
def test_parity_with_kdiffusion(ours, theirs, preset):
    """Same exact denoiser, same x0, same σ grid (Karras, then 0), same normal draws: float32 rounding."""
    kd = _kdiffusion()
    steps, n = 9, 400
    spec = compile_spec(load_spec(preset_dir() / f"{preset}.dfs"), None,
                        {"target": "ring8", "samples": n, "steps": steps, "solver": ours, "denoise": True} | KARRAS)
    target = make_run_target(spec)
    gen = torch.Generator().manual_seed(7)
    x0 = torch.randn(n, 2, generator=gen) * 80
    zs = [torch.randn(n, 2, generator=gen) for _ in range(steps)]
    mine, cost = simulate(spec, target, x0=x0.clone(), normals=lambda i: zs[i])
    sigmas = kd.get_sigmas_karras(steps + 1, 0.002, 80.0, 7.0)  # steps + 1 sigmas and a final 0
    assert np.allclose(sigmas[:-1].double().numpy(), spec.on_grid("sigma", spec.grid()), rtol=1e-6)
    drawn = iter(zs)
    kw = {"noise_sampler": lambda s, s_next: next(drawn)} if "sde" in theirs else {}
    if preset == "ve_ode" and "sde" in theirs:
        kw["eta"] = 0.0

    def denoiser(x, sigma):
        s = float(sigma.reshape(-1)[0])
        return x + s * s * target.score(x, s)

    ref = getattr(kd, theirs)(denoiser, x0.clone(), sigmas, disable=True, **kw)
    scale = float(ref.abs().max())
    assert float((mine - ref).abs().max()) < 1e-4 * scale
    assert cost["nfe"] == steps + 1


# ---------------------------------------------------------------------------------------
# Convergence orders on a Gaussian target (MATH §6: the exact flow is known)


def ode_error(solver: str, steps: int) -> float:
    """Max over particles of |x_N − x(σ_N)| on ve_ode (Karras grid, σ clock), against the exact flow
    x(σ) = m + sqrt((S + σ²)/(S + σ_0²)) (x_0 − m) of the VE probability-flow ODE for q = N(m, S)."""
    spec = spec_for("ve_ode", solver=solver, steps=steps, **KARRAS)
    target = make_run_target(spec, dtype=torch.float64)
    grid = Grid.of(spec)
    sig = spec.on_grid("sigma", grid.ts)
    x0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * math.sqrt(1 + sig[0]**2)
    x = solve_run(spec, Terms.of(spec, target), x0, grid)
    exact = M + np.sqrt((S + sig[-1] ** 2) / (S + sig[0] ** 2)) * (x0.numpy() - M)
    return float(np.abs(x.numpy() - exact).max())


def slopes(errors) -> np.ndarray:
    return -np.diff(np.log(errors)) / math.log(2)


def fitted_order(errors) -> float:
    n = len(errors)
    return float(-np.polyfit(np.log2(2.0 ** np.arange(n)), np.log2(errors), 1)[0])


ORDER_STEPS = (32, 64, 128)
# deis_3m's first two steps (orders 1 and 2, while its history fills) weigh on its error up to ~128
# steps (MATH §12): its slope is 2.66 → 2.87 over 32–128 steps and 2.87 → 2.96 over 64–256
LATE_ORDER_STEPS = {"deis_3m": (64, 128, 256)}


@pytest.mark.parametrize("solver,order", [("euler", 1), ("ddim", 1), ("heun", 2), ("dpmpp_2m", 2),
                                          ("expint_2m", 2), ("expint_3m", 3), ("deis_2m", 2), ("deis_3m", 3)])
def test_deterministic_solvers_converge_at_their_order(solver, order):
    """The error's log-log slope against the number of steps is the solver's nominal order (± 0.3)."""
    errors = [ode_error(solver, n) for n in LATE_ORDER_STEPS.get(solver, ORDER_STEPS)]
    assert abs(fitted_order(errors) - order) < 0.3, (solver, errors, slopes(errors))


def test_published_dpmpp_3m_is_second_order():
    """MATH §11: DPM-Solver++(3M) as published gives the quadratic term half its exact weight, so it
    converges at order 2; with the exact weight (expint_3m) the same interpolant gives order 3."""
    published = [ode_error("dpmpp_3m", n) for n in ORDER_STEPS]
    exact = [ode_error("expint_3m", n) for n in ORDER_STEPS]
    assert fitted_order(published) < 2.5 < fitted_order(exact)
    assert exact[-1] < published[-1] / 3


def weak_error(solver: str, steps: int) -> float:
    """The weak error (mean and variance) of a solver on ve_sde for the Gaussian target, without sampling
    error: the scheme is affine in x_0 and in its normal draws (D is linear in x for a Gaussian q), so
    one particle gives its mean, one the response to x_0 and one per step the response to that step's
    draw, and the output variance is their sum of squares. The law from Q_0 is Q_T (MATH §3)."""
    spec = spec_for("ve_sde", solver=solver, steps=steps, **KARRAS)
    target = make_run_target(spec, dtype=torch.float64)
    grid = Grid.of(spec)
    sig = spec.on_grid("sigma", grid.ts)
    x0 = torch.tensor(np.stack([M, M + np.sqrt(S + sig[0] ** 2)] + [M] * steps))

    def normals(i):
        z = torch.zeros(steps + 2, 2, dtype=torch.float64)
        z[2 + i] = 1.0
        return z

    x = solve_run(spec, Terms.of(spec, target), x0, grid, normals=normals).numpy()
    mean = x[0]
    var = ((x[1:] - mean) ** 2).sum(0)
    return float(np.abs(var - (S + sig[-1] ** 2)).max() + np.abs(mean - M).max())


@pytest.mark.parametrize("solver,order", [("euler", 1), ("ddim", 1), ("dpmpp_2m_sde", 2), ("dpmpp_3m_sde", 2),
                                          ("expint_2m", 2)])
def test_sde_solvers_weak_order(solver, order):
    errors = [weak_error(solver, n) for n in ORDER_STEPS]
    assert abs(fitted_order(errors) - order) < 0.3, (solver, errors, slopes(errors))


# ---------------------------------------------------------------------------------------
# The peers a table shows, each checked on a Gaussian target against the closed form


@pytest.mark.parametrize("peer", ["dpmpp_3m_sde", "dpmpp_sde", "lms"])
def test_peer_reaches_the_gaussian_target(peer):
    """At 32 NFE with the exact denoiser the peer's samples have the target's mean and covariance
    (within five standard errors of 4,000 samples)."""
    _kdiffusion()
    from dfc.peers import run_peer
    from dfc.targets import make_target

    target = make_target("gaussian", {"mean": M.tolist(), "cov": np.diag(S).tolist()})
    n = 4000
    x, cost = run_peer(peer, target, n, 32, seed=3)
    assert cost["nfe"] <= 32
    x = x.double().numpy()
    assert np.all(np.abs(x.mean(0) - M) < 5 * np.sqrt(S / n))
    assert np.allclose(np.cov(x.T), np.diag(S), atol=5 * S.max() * math.sqrt(2 / n))


def test_cli_lists_solvers_and_check_names_the_linear_part():
    from typer.testing import CliRunner

    from dfc.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["solvers"])
    assert listed.exit_code == 0 and all(name in listed.output for name in ("ddim", "expint", "srk", "torchsde"))
    checked = runner.invoke(app, ["check", "ve_sde", "--no-latex"])
    assert checked.exit_code == 0 and "linear part" in checked.output and "L(t) =" in checked.output
