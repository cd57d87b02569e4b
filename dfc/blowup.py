"""Divergence: a run whose particles blow up stops with an error instead of writing garbage.

The samplers (dfc.backends) call `check_blowup` with the initial particles and once after each step;
it keeps a copy of the last particles it accepted, to weigh the terms of a step that blew up at the
state the step started from. Particles have *blown up* when a
coordinate is non-finite or larger than BLOWUP_FACTOR times the problem's scale at that time:
the larger of the prior's scale (|mean| + scale for `normal(mean, scale)`; the noised target at t0
for `prior target`) and the scale of the noised target at t, (R + σ(t)) / u(t), where R is the
target's largest coordinate in absolute value (of its plotting box, every coordinate). Ordinary runs stay within a
few times that scale; a blown-up one is a NumericalError naming the step, its time, and the term of
the step (score, GAN, weight decay f, noise) that was largest there.
"""

from __future__ import annotations

import math
import weakref

import torch

from dfc.errors import NumericalError

BLOWUP_FACTOR = 1e3

_fixed_scales: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # drift -> (R, prior scale), once per run
_accepted: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # drift -> the last particles that passed


def check_blowup(drift, x: torch.Tensor, step: int, t: float, dt: float) -> None:
    """Raise a NumericalError if the particles `x` after step `step` (which started at time `t` and
    moved by `dt`; step 0: the initial particles at t, dt = 0) are non-finite or beyond
    BLOWUP_FACTOR × the problem's scale at t."""
    largest = float(x.abs().amax()) if x.numel() else 0.0
    bound = BLOWUP_FACTOR * problem_scale(drift, t)
    if largest <= bound:
        _accepted[drift] = x.detach().clone()
        return
    before = _accepted.pop(drift, None) if step > 0 else None
    what = "non-finite" if not math.isfinite(largest) else f"as large as {largest:.3g}"
    term, nan = _dominant(drift, x if before is None else before, t, dt)
    if nan:  # not a step too large: a field gave NaN or inf at particles that were fine
        cause, hint = (f"{term} was not finite at the particles the step started from",
                       "Check the field behind that term (a model or checkpoint that returns NaN or inf, an "
                       "estimator option); more steps will not help.")
    else:
        cause, hint = (f"the largest term of the step there was {term}",
                       "Use more --steps, a Karras grid or another clock, or a smaller GAN weight (e.g. kappa) or "
                       "step size.")
    raise NumericalError(
        f"spec {drift.spec.name!r}: the particles blew up at step {step} (t = {t:.6g}): coordinates became "
        f"{what}, beyond {BLOWUP_FACTOR:g} × the problem's scale ({bound:.3g}); {cause}.", None, hint)


def problem_scale(drift, t: float) -> float:
    """max(prior scale, (R + σ(t)) / u(t)): see the module's docstring."""
    if drift not in _fixed_scales:
        _fixed_scales[drift] = _fixed_scale(drift)
    r, start = _fixed_scales[drift]
    c = drift.coeffs(t)
    return max(start, (r + abs(c.sigma)) / abs(c.u))


def _fixed_scale(drift) -> tuple[float, float]:
    """(R, the prior's scale) of a run: computed once, at its first step."""
    spec = drift.spec
    r = _target_extent(drift.target)
    prior = spec.ir.prior
    if prior.kind == "normal":
        kw = {k: float(v.xreplace(spec.params)) for k, v in prior.kwargs}
        return r, abs(kw["mean"]) + abs(kw["scale"])
    c0 = drift.coeffs(spec.t0)
    return r, (r + abs(c0.sigma)) / abs(c0.u)


def _target_extent(target) -> float:
    """The target's largest coordinate in absolute value, over its plotting box in every coordinate
    (a learned score: of the data it was given, else its own box); 0 if it has none."""
    inner = getattr(target, "data_target", None) or target
    box = getattr(inner, "_bounds", None) or getattr(inner, "bounds", None)  # `_bounds`: every coordinate
    if box is None:
        return 0.0
    lo, hi = box()
    return float(torch.cat([torch.as_tensor(lo, dtype=torch.float64).abs().reshape(-1),
                            torch.as_tensor(hi, dtype=torch.float64).abs().reshape(-1)]).max())


def _dominant(drift, x: torch.Tensor, t: float, dt: float) -> tuple[str, bool]:
    """('the GAN term (1.2e+09 per coordinate)', False), say: the largest of the step's terms (drift term × dt,
    noise ν √dt) at the particles `x` the step started from; (that term, True) when one is not finite there
    (where the particles were finite, a field returned NaN or inf)."""
    spec, c = drift.spec, drift.coeffs(t)
    terms = {"the noise": torch.tensor(c.noise * math.sqrt(abs(dt)))}
    try:
        s_q, gan, logit = drift.fields(x, t)
        terms["the score term"] = s_q * (c.w_score * dt)
        if gan is not None:
            w = c.w_gan if c.w_gan is not None else spec.fn["w_gan"](t, torch.sigmoid(logit)[:, None])
            terms["the GAN term"] = gan * w * dt
        terms["the weight decay f"] = (c.a * x + c.b if c.a is not None else spec.fn["f"](x, t)) * dt
    except (RuntimeError, ValueError, ArithmeticError):  # the fields cannot be evaluated out there
        return "one dfc could not evaluate at the blown-up particles", False
    if bool(torch.isfinite(x).all()):
        for name, v in terms.items():
            if not bool(torch.isfinite(torch.as_tensor(v)).all()):
                return name, True
    sizes = {name: _size(v) for name, v in terms.items()}
    name = max(sizes, key=sizes.get)
    return f"{name} ({sizes[name]:.3g} per coordinate)", False


def _size(v) -> float:
    """The largest absolute entry of `v`, NaNs ignored."""
    v = torch.as_tensor(v)
    return float(torch.nan_to_num(v.abs(), nan=0.0).amax()) if v.numel() else 0.0
