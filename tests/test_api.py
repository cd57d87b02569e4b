"""The Python API (issue 12): dfc.compile, Sampler.sample with models, the torchsde view,
k-diffusion interop and the diffusers adapter."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dfc
from dfc.errors import ConfigError, DfcError, SpecNameError
from dfc.peers import kdiffusion_sampling
from dfc.targets import make_target

N = 4000


class Ring8Denoiser(nn.Module):
    """The exact denoiser E[Y | Y + σε = x] of ring8 (8 equal components, radius 4, std 0.15), written
    independently of dfc.targets: responsibilities times each component's posterior mean."""

    def __init__(self, radius: float = 4.0, std: float = 0.15):
        super().__init__()
        ang = torch.arange(8, dtype=torch.float32) * (2 * math.pi / 8)
        self.register_buffer("means", radius * torch.stack([torch.cos(ang), torch.sin(ang)], dim=1))
        self.var = std**2
        self.calls = 0

    def forward(self, x, sigma):
        self.calls += 1
        assert sigma.shape == (x.shape[0],)  # k-diffusion's convention: one σ per sample
        v = self.var + sigma[:, None] ** 2  # (N, 1)
        diff = x[:, None, :] - self.means[None]  # (N, K, D)
        r = torch.softmax(-(diff**2).sum(-1) / (2 * v), dim=1)
        post = self.means[None] + (self.var / v)[:, :, None] * diff
        return (r[:, :, None] * post).sum(1)


def sw2(x, target, seed=7):
    ref = target.sample(x.shape[0], torch.Generator().manual_seed(seed))
    return dfc.metrics.sliced_w2(x.double(), ref.double())


# ---------------------------------------------------------------------------------------
# compile


def test_compile_takes_a_preset_a_path_or_text(tmp_path):
    text = 'spec mine extends ve_ode "the ODE, written here"\n  param sigma_min = 0.002\nend\n'
    (tmp_path / "mine.dfs").write_text(text)
    runs = [dfc.compile(s, samples=200, steps=6).sample()[0]
            for s in ("ve_ode", tmp_path / "mine.dfs", str(tmp_path / "mine.dfs"), text)]
    for x in runs[1:]:
        assert torch.equal(x, runs[0])
    assert dfc.compile(text).name == "mine"


def test_compile_validates_typed_params_and_run_entries():
    s = dfc.compile("diffusion_gan", kappa=0.25, steps=8, denoise=True, time=(0, 0.5), fields="exact + kde(h = 0.3)")
    assert s.spec.run.steps == 8 and s.spec.run.denoise is True and s.spec.run.time == (0.0, 0.5)
    assert s.spec.run.estimator_options == (("h", 0.3),)
    assert {str(k): v for k, v in s.spec.params.items()}["kappa"] == 0.25
    assert dfc.compile("diffusion_gan", kappa="2*eta").spec.params[dfc.spec.param_symbol("kappa")] == 2.0
    with pytest.raises(ConfigError, match="whole number"):
        dfc.compile("ve_sde", steps=2.5)
    with pytest.raises(ConfigError, match="denoise"):
        dfc.compile("ve_sde", denoise="maybe")
    with pytest.raises(ConfigError) as exc:
        dfc.compile("ve_sde", stepz=8)
    assert "Did you mean 'steps'" in exc.value.render() and "eta" in exc.value.render()


def test_spec_text_errors_are_located_in_the_string():
    with pytest.raises(SpecNameError) as exc:
        dfc.compile("spec bad extends ve_sde\n  param kappa = 1\n  beta(t) = g2(t)/2 + kapa*r(t)\nend\n")
    assert str(exc.value.span) == "<string>:3:23" and "kapa" in exc.value.render()
    with pytest.raises(SpecNameError, match="Did you mean 've_sde'"):
        dfc.compile("ve_sdee")


def test_version_is_public():
    from importlib.metadata import version

    assert dfc.__version__ == version("dfc")
    from typer.testing import CliRunner

    from dfc.cli import app

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"dfc {dfc.__version__}"


# ---------------------------------------------------------------------------------------
# sample, sigmas, prior


def test_sample_is_dfc_run():
    from dfc.sample import build, make_run_target, simulate

    x, cost = dfc.compile("diffusion_gan", samples=300, steps=8, seed=3).sample()
    spec = build("diffusion_gan", {}, {"samples": "300", "steps": "8", "seed": "3"})
    y, _ = simulate(spec, make_run_target(spec))
    assert torch.equal(x, y) and cost["nfe"] == 8 and cost["steps"] == 8
    again, _ = dfc.compile("diffusion_gan", samples=300, steps=8).sample(seed=3)
    assert torch.equal(again, x)  # sample's seed is the run's seed


def test_sigmas_and_prior():
    s = dfc.compile("ve_ode", steps=4, grid="karras", denoise=True)
    sig = s.sigmas
    assert sig.dtype == torch.float32 and sig.shape == (6,) and sig[-1] == 0
    assert sig[0].item() == pytest.approx(80) and sig[-2].item() == pytest.approx(0.002)
    assert bool((torch.diff(sig) < 0).all())
    x = s.prior(5000, seed=1)
    assert x.shape == (5000, 2) and x.std().item() == pytest.approx(80, rel=0.05)
    assert torch.equal(x, s.prior(5000, seed=1)) and not torch.equal(x, s.prior(5000, seed=2))
    assert dfc.compile("ve_ode", steps=4).sigmas.shape == (5,)  # no final 0 without the denoising step


@pytest.mark.parametrize("name", ["ve_sde", "ve_ode", "diffusion_gan", "diffusion_gan_gauss"])
def test_a_hand_written_denoiser_matches_the_exact_fields(name):
    """A user's nn.Module in k-diffusion's convention drives every kind of spectrum point (the GAN ones
    call it at the KDE's smoothed σ too) and lands where the exact fields do, same seed."""
    s = dfc.compile(name, samples=N)
    target = make_target("ring8")
    model = Ring8Denoiser()
    x, cost = s.sample(seed=5, model=model)
    y, _ = s.sample(seed=5)
    assert torch.isfinite(x).all() and x.dtype == torch.float32
    assert model.calls >= cost["nfe"] > 0
    a, b = sw2(x, target), sw2(y, target)
    assert abs(a - b) < 0.02, (a, b)
    assert a < 0.5  # and a good sample (ring8 at N = 4000: the floor, target against target, is about 0.2)


def test_a_score_model_and_a_function():
    t = make_target("ring8")
    s = dfc.compile("ve_ode", samples=500, steps=8)
    exact, _ = s.sample()
    by_score, _ = s.sample(model=dfc.Score(lambda x, sigma: t.score(x, sigma[0])))
    by_fn, _ = s.sample(model=lambda x, sigma: x + sigma[:, None] ** 2 * t.score(x, sigma[0]))
    torch.testing.assert_close(by_score, exact, rtol=0, atol=1e-4)
    torch.testing.assert_close(by_fn, exact, rtol=0, atol=1e-3)


def test_a_model_in_float64_sets_the_particles_dtype():
    x, _ = dfc.compile("ve_ode", samples=100, steps=4).sample(model=Ring8Denoiser().double())
    assert x.dtype == torch.float64


def test_model_errors_are_dfc_errors():
    with pytest.raises(ConfigError, match="log Q_t"):
        dfc.compile("ns_gan", samples=100, steps=2).sample(model=Ring8Denoiser())
    with pytest.raises(ConfigError, match="model="):
        dfc.compile("ve_ode").sample(model=42)


def test_a_model_of_the_wrong_shape_is_refused():
    s = dfc.compile("ve_ode", samples=50, steps=2)
    with pytest.raises(ConfigError, match=r"returned shape \(50, 1\) for an input of shape \(50, 2\)"):
        s.sample(model=lambda x, sigma: x[:, :1])  # would broadcast against x without the check
    with pytest.raises(ConfigError, match="returned a list"):
        s.sample(model=lambda x, sigma: [x])


def test_a_model_that_returns_nan_is_named_as_the_cause():
    from dfc.errors import NumericalError

    with pytest.raises(NumericalError) as exc:
        dfc.compile("ve_sde", samples=50, steps=4).sample(model=lambda x, sigma: x * float("nan"))
    assert "the score term was not finite at the particles the step started from" in exc.value.message
    assert "more steps will not help" in exc.value.hint  # not the advice for a step that is too large


@pytest.mark.parametrize("kw,message", [({"n": -3}, "n must be >= 2"), ({"n": 2.5}, "n must be a whole number"),
                                        ({"n": 0}, "n must be >= 2"), ({"seed": -1}, "seed -1 is not a seed"),
                                        ({"n": 10**9}, "beyond dfc's limit of 100,000,000")])
def test_sample_counts_are_checked_as_the_cli_checks_them(kw, message):
    s = dfc.compile("ve_ode", samples=50, steps=2)
    for call in (s.sample, s.prior, s.torchsde):
        with pytest.raises(DfcError, match=message) as exc:
            call(**kw)
        assert exc.value.message.startswith(f"{call.__name__}(): ")  # the call the user made
    assert s.sample(n=2, seed=2**32 - 1)[0].shape == (2, 2)  # the ends of the ranges are accepted


def test_torchsde_view_is_the_torchsde_backend():
    """sdeint on the view, with the backend's Brownian motion, is `dfc run --backend torchsde`."""
    import torchsde

    from dfc.backends.torchsde_backend import brownian
    from dfc.sample import simulate

    s = dfc.compile("ve_sde", clock="t", backend="torchsde", samples=300, steps=16, seed=4)
    sde, y0, ts = s.torchsde()
    ours = torchsde.sdeint(sde, y0, ts, method="euler", dt=1 / 16, bm=brownian(y0, ts, 4))[-1]
    theirs, _ = simulate(s.spec, s.target)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="t clock"):
        dfc.compile("ve_sde").torchsde()


# ---------------------------------------------------------------------------------------
# k-diffusion interop


def kd_or_skip():
    kd = kdiffusion_sampling()
    if kd is None:
        pytest.skip("k-diffusion is not installed (pip install --no-deps k-diffusion)")
    return kd


def test_ve_ode_as_a_kdiffusion_sampler_is_sample_euler():
    kd = kd_or_skip()
    sigmas = kd.get_sigmas_karras(8, 0.002, 80.0, 7.0)
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    model = Ring8Denoiser()
    theirs = kd.sample_euler(model, x, sigmas, disable=True)
    seen = []
    ours = dfc.kdiffusion_sampler(dfc.compile("ve_ode"))(model, x, sigmas, callback=seen.append, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-3)
    assert [c["i"] for c in seen] == list(range(7))  # the 8th step, to 0, is the denoising step
    assert seen[0]["denoised"].shape == x.shape and seen[0]["sigma"] == sigmas[0]


def test_diffusion_gan_through_the_kdiffusion_signature():
    s = dfc.compile("diffusion_gan", samples=2000)
    sigmas = s.sigmas  # ends at σ_min: no final 0, the samples stay at the path's end
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    fn = dfc.kdiffusion_sampler(s, seed=1)
    out = fn(Ring8Denoiser(), x, sigmas, disable=True)
    assert out.shape == x.shape and torch.isfinite(out).all()
    exact, _ = s.sample(seed=1)
    target = make_target("ring8")
    assert abs(sw2(out, target) - sw2(exact, target)) < 0.03
    again = dfc.kdiffusion_sampler(s, seed=1)(Ring8Denoiser(), x, sigmas, disable=True)
    assert torch.equal(out, again)


def test_kdiffusion_sampler_refuses_sigmas_outside_the_spec():
    fn = dfc.kdiffusion_sampler(dfc.compile("ve_ode"))
    x = torch.zeros(10, 2)
    with pytest.raises(ConfigError, match="outside"):
        fn(Ring8Denoiser(), x, torch.tensor([200.0, 1.0, 0.0]))
    with pytest.raises(ConfigError, match="decrease"):
        fn(Ring8Denoiser(), x, torch.tensor([1.0, 2.0, 0.0]))


# ---------------------------------------------------------------------------------------
# diffusers' convention


MEAN, STD = torch.tensor([1.0, -0.5]), 0.7


def ddpm_alphas_cumprod(k: int = 1000) -> torch.Tensor:
    return torch.cumprod(1 - torch.linspace(1e-4, 0.02, k, dtype=torch.float64), 0)


class GaussianEps(nn.Module):
    """The exact ε-prediction of N(MEAN, STD² I) for x_k = sqrt(ᾱ_k) y + sqrt(1 − ᾱ_k) ε, ᾱ linearly
    interpolated between integer timesteps."""

    def __init__(self, abar):
        super().__init__()
        self.abar = abar
        self.scale = nn.Parameter(torch.ones(()))  # gives the module a dtype and device

    def forward(self, x, timestep):
        k = timestep.to(torch.float64).clamp(0, len(self.abar) - 1)
        lo = k.floor().long().clamp(max=len(self.abar) - 2)
        a = (self.abar[lo] + (k - lo) * (self.abar[lo + 1] - self.abar[lo])).to(x.dtype)[:, None]
        var = a * STD**2 + 1 - a
        return self.scale * torch.sqrt(1 - a) * (x - torch.sqrt(a) * MEAN) / var


def test_diffusers_eps_model_as_a_denoiser():
    abar = ddpm_alphas_cumprod()
    den = dfc.from_diffusers(GaussianEps(abar), abar)
    sig_table = torch.sqrt((1 - abar) / abar)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0)) * 3
    for k in (0, 10, 500, 999):
        s = float(sig_table[k])
        exact = MEAN + STD**2 / (STD**2 + s**2) * (x - MEAN)  # the Gaussian's denoiser
        torch.testing.assert_close(den(x, torch.full((64,), s)), exact, rtol=1e-4, atol=1e-4)
    s = 0.5 * float(sig_table[300] + sig_table[301])  # between table entries: interpolated
    exact = MEAN + STD**2 / (STD**2 + s**2) * (x - MEAN)
    torch.testing.assert_close(den(x, torch.full((64,), s)), exact, rtol=1e-3, atol=1e-3)


def test_sampling_with_a_diffusers_model():
    abar = ddpm_alphas_cumprod()
    target = "gaussian(mean = [1, -0.5], std = 0.7)"
    s = dfc.compile("ve_ode", target=target, sigma_min=0.02, samples=2000, steps=16)
    x, _ = s.sample(model=dfc.from_diffusers(GaussianEps(abar), abar))
    y, _ = s.sample()
    torch.testing.assert_close(x, y, rtol=0, atol=2e-2)
