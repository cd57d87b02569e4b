"""The `run` block: what to sample, with which fields, solver, grid and clock.

Entries come from the spec (merged up its `extends` chain) and are overridden by the CLI.
Each entry is validated here, and a bad one is reported at its place in the spec (or as the
command-line option it came from).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from dfc.errors import ConfigError, DfcError, LimitError, Span
from dfc.solvers import BACKENDS, CLOCKS, SOLVERS
from dfc.syntax import RCall, RunEntry, parse_run_value, run_text

GRIDS = ("uniform", "karras")
ESTIMATORS = ("kde", "gauss", "closed")
KEYS = ("target", "fields", "solver", "backend", "steps", "grid", "clock", "time", "samples", "seed",
        "device", "denoise")


@dataclass(frozen=True)
class RunConfig:
    target: str = "ring8"
    target_options: tuple = ()  # (name, value) pairs, for gaussian(...) / gmm(...)
    score_ckpt: str | None = None  # a learned score (dfc train score) instead of the target's exact one
    estimator: str | None = None  # population estimate of s_p (MATH §5); None: chosen when needed
    estimator_options: tuple = ()
    solver: str = "euler"
    backend: str = "native"
    steps: int = 32
    grid: str = "uniform"
    rho: float = 7.0
    clock: str = "t"
    time: tuple[float, float] = (0.0, 1.0)
    samples: int = 4000
    seed: int = 0
    device: str = "cpu"
    denoise: bool = False
    spans: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def nfe_per_step(self) -> int:
        from dfc.solvers import solver_for

        return solver_for(self).nfe_per_step

    def describe(self) -> dict:
        out = {k: getattr(self, k) for k in KEYS if k not in ("fields", "target")}
        out["target"] = self.target + (f"({_kw(self.target_options)})" if self.target_options else "")
        base = f'learned(score = "{self.score_ckpt}")' if self.score_ckpt else "exact"
        out["fields"] = base + (f" + {self.estimator}" if self.estimator else "") + (
            f"({_kw(self.estimator_options)})" if self.estimator_options else "")
        out["grid"] = self.grid + (f"(rho = {self.rho:g})" if self.grid == "karras" else "")
        out["time"] = list(self.time)
        return out


def _kw(pairs) -> str:
    return ", ".join(f"{k} = {run_text(v)}" for k, v in pairs)


def _err(entry_key: str, message: str, span: Span | None, hint: str | None = None) -> ConfigError:
    where = "" if span is not None else f"run entry `{entry_key}`: "
    return ConfigError(where + message, span, hint)


MAX_STEPS = 1_000_000  # time steps of one run
MAX_SAMPLES = 100_000_000  # particles of one run (memory is checked too, dfc.sample.check_memory)
MAX_SEED = 2**32 - 1  # seeds are offset and multiplied for independent streams; these stay within torch's 64 bits


def _number(key, value, span, kind=float, lo=None, strict=False, hi=None, name=None):
    """`value` as a `kind` within [lo, hi] (lo excluded if `strict`); errors name `name` (default `key`)."""
    name = name or f"`{key}`"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _err(key, f"{name} must be a number, got {run_text(value)}.", span)
    if isinstance(value, float) and not math.isfinite(value):
        raise _err(key, f"{name} must be a finite number, got {value}.", span)
    if hi is not None and value > hi:
        raise LimitError((f"run entry `{key}`: " if span is None else "") +
                         f"`{key}` = {value:g} is beyond dfc's limit of {hi:,}.", span,
                         f"Use at most {hi:,} {key}.")
    if kind is int and float(value) != int(value):
        raise _err(key, f"{name} must be a whole number, got {value}.", span)
    v = kind(value)
    if lo is not None and (v <= lo if strict else v < lo):
        raise _err(key, f"{name} must be {'>' if strict else '>='} {lo}, got {v}.", span)
    return v


def check_seed(value, span: Span | None = None, key: str = "--seed") -> int:
    """A seed is a whole number from 0 to MAX_SEED (2³² − 1)."""
    seed = _number(key, value, span, int)  # a finite whole number, else a ConfigError
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{key} {seed} is not a seed; a seed is a whole number from 0 to {MAX_SEED:,} "
                          f"(2^32 - 1).", span, "Use a smaller seed, e.g. its remainder modulo 2^32." if seed > 0 else
                          "Use a seed from 0 up, e.g. 0.")
    return seed


def _choice(key, value, options, span):
    if not isinstance(value, str) or value not in options:
        from dfc.spec import did_you_mean

        hint = did_you_mean(value, options) if isinstance(value, str) else None
        raise _err(key, f"`{key}` must be one of {', '.join(options)}; got {run_text(value)}.", span, hint)
    return value


KDE_OPTIONS = "h (a fixed bandwidth > 0), method (auto, exact, binned, subset), m (subset size >= 2), " \
              "cfl (the stability number of MATH §10, >= 0; 0 turns the bandwidth floor off)"


def _estimator_options(key, name, opts, span) -> tuple:
    """kde(h = ..., method = ..., m = ..., cfl = ...): each option checked (MATH §10)."""
    from dfc.kde import METHODS

    out = []
    for k, v in opts:
        if name != "kde":
            raise _err(key, f"estimator {name} takes no options; got {k!r}.", span)
        option = f"kde option `{k}`"
        if k == "h":
            v = _number(key, v, span, lo=0, strict=True, name=option)
        elif k == "method":
            v = _choice("kde method", v, METHODS, span)
        elif k == "m":
            v = _number(key, v, span, int, lo=2, name=option)
        elif k == "cfl":
            v = _number(key, v, span, lo=0, name=option)
        else:
            raise _err(key, f"kde has no option {k!r}; it takes {KDE_OPTIONS}.", span)
        out.append((k, v))
    kw = dict(out)
    if kw.get("method") in ("exact", "binned") and "m" in kw:
        raise _err(key, f"kde(m = ...) is the subset size of method = subset, not of method = {kw['method']}.", span)
    return tuple(out)


def apply_entry(cfg: RunConfig, key: str, value, span: Span | None) -> RunConfig:
    spans = dict(cfg.spans)
    spans[key] = span
    cfg = replace(cfg, spans=spans)
    if key == "target":
        if isinstance(value, RCall):
            return replace(cfg, target=value.name, target_options=value.kwargs)
        if isinstance(value, str):
            return replace(cfg, target=value, target_options=())
        raise _err(key, "`target` is a name (ring8, grid25, checkerboard), a call such as "
                        "gaussian(mean = [0, 0], cov = [[1, 0], [0, 1]]), or a \"file.npy\".", span)
    if key == "fields":
        parts = list(value) if isinstance(value, tuple) else [value]
        names = [p.name if isinstance(p, RCall) else p for p in parts]
        if not names or names[0] not in ("exact", "learned") or len(parts) > 2:
            raise _err(key, f"`fields` is `exact` or `learned(score = \"FILE\")`, optionally plus one population "
                            f"estimate of s_p ({', '.join(ESTIMATORS)}) or a discriminator stack "
                            f"disc(path = \"FILE\"), e.g. exact + kde(h = 0.2); got {run_text(value)}.", span)
        ckpt = None
        if names[0] == "learned":
            kw = dict(parts[0].kwargs) if isinstance(parts[0], RCall) else {}
            if set(kw) != {"score"} or not isinstance(kw["score"], str):
                raise _err(key, 'a learned field is written learned(score = "FILE.safetensors").', span)
            ckpt = kw["score"]
        cfg = replace(cfg, score_ckpt=ckpt)
        if len(parts) == 1:
            return replace(cfg, estimator=None, estimator_options=())
        est = parts[1]
        if (est.name if isinstance(est, RCall) else est) == "disc":  # learned discriminators (dfc.learned)
            kw = dict(est.kwargs) if isinstance(est, RCall) else {}
            if set(kw) != {"path"} or not isinstance(kw["path"], str) or not kw["path"].strip():
                raise _err(key, 'a discriminator stack is written disc(path = "FILE.safetensors"), a file from '
                                '`dfc train disc`.', span)
            return replace(cfg, estimator="disc", estimator_options=(("path", kw["path"]),))
        name = _choice(key, est.name if isinstance(est, RCall) else est, ESTIMATORS, span)
        opts = est.kwargs if isinstance(est, RCall) else ()
        return replace(cfg, estimator=name, estimator_options=_estimator_options(key, name, opts, span))
    if key == "solver":
        return replace(cfg, solver=_choice(key, value, SOLVERS, span))
    if key == "backend":
        return replace(cfg, backend=_choice(key, value, BACKENDS, span))
    if key == "steps":
        return replace(cfg, steps=_number(key, value, span, int, lo=1, hi=MAX_STEPS))
    if key == "samples":
        return replace(cfg, samples=_number(key, value, span, int, lo=2, hi=MAX_SAMPLES))
    if key == "seed":
        return replace(cfg, seed=check_seed(value, span, key))
    if key == "grid":
        if isinstance(value, RCall) and value.name == "karras":
            rho = 7.0
            for k, v in value.kwargs:
                if k != "rho":
                    raise _err(key, f"karras(...) takes rho, not {k!r}.", span)
                rho = _number(key, v, span, lo=0, strict=True)
            return replace(cfg, grid="karras", rho=rho)
        return replace(cfg, grid=_choice(key, value, GRIDS, span))
    if key == "clock":
        return replace(cfg, clock=_choice(key, value, CLOCKS, span))
    if key == "time":
        if not (isinstance(value, list) and len(value) == 2):
            raise _err(key, f"`time` is [t0, t1], got {run_text(value)}.", span)
        t0, t1 = (_number(key, v, span) for v in value)
        if not t1 > t0:
            raise _err(key, f"`time` must have t0 < t1, got [{t0}, {t1}].", span)
        return replace(cfg, time=(t0, t1))
    if key == "device":
        if not isinstance(value, str):
            raise _err(key, "`device` is a torch device name such as cpu or cuda.", span)
        return replace(cfg, device=value)
    if key == "denoise":
        if not isinstance(value, bool):
            raise _err(key, "`denoise` is true or false.", span)
        return replace(cfg, denoise=value)
    from dfc.spec import did_you_mean

    raise _err(key, f"unknown run entry `{key}`.", span,
               " ".join(filter(None, [did_you_mean(key, KEYS), f"Entries: {', '.join(KEYS)}."])))


WHOLE = ("steps", "samples", "seed")  # whole-number entries
NAMES = ("solver", "backend", "clock", "device")  # a bare name, taken as typed


def _override(key: str, given):
    """An override as a typed run value, converted once for its key and then validated by `apply_entry`
    like a spec's entry. Python values are used directly (a tuple for `time` is its list). Text (the
    command line, `--run key=value`) is converted by the key's type: a number for steps, samples
    and seed, true/false for denoise, a name for solver, backend, clock and device; only the
    structured entries (target, fields, grid, time) are parsed as the run block writes them
    (`exact + kde`, `karras(rho = 5)`), and a .npy file name is a target as typed."""
    if isinstance(given, os.PathLike):
        given = os.fspath(given)
    if hasattr(given, "item") and getattr(given, "ndim", None) == 0:  # a numpy or torch scalar
        given = given.item()
    if not isinstance(given, str):
        return list(given) if key == "time" and isinstance(given, tuple) else given
    text = given.strip()
    if key in WHOLE:
        for kind in (int, float):  # a float (1e7, 2.5, inf) is then refused or accepted by apply_entry
            try:
                return kind(text)
            except ValueError:
                pass
        raise ConfigError(f"--{key} {given}: `{key}` must be a whole number.")
    if key == "denoise":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ConfigError(f"--denoise {given}: `denoise` is true or false.")
    if key in NAMES or given.endswith(".npy"):
        return text if key != "device" else given
    try:
        return parse_run_value(given, f"--{key}")
    except DfcError as exc:
        raise ConfigError(f"--{key} {given}: {exc.message}", None, exc.hint) from None


def run_config(entries: tuple[RunEntry, ...], overrides: dict[str, object] | None = None) -> RunConfig:
    """Spec entries first, then overrides: typed values (`{"steps": 16, "target": "grid25"}`), or
    command-line text converted per key (`_override`), or Python values (`{"steps": 16, "denoise": True, "time": (0, 0.5)}`, the Python API)."""
    cfg = RunConfig()
    for e in entries:
        cfg = apply_entry(cfg, e.key, e.value, e.span)
    for key, given in (overrides or {}).items():
        if key not in KEYS:
            from dfc.spec import did_you_mean

            raise ConfigError(f"unknown run setting {key!r}.", None,
                              " ".join(filter(None, [did_you_mean(key, KEYS), f"Settings: {', '.join(KEYS)}."])))
        cfg = apply_entry(cfg, key, _override(key, given), None)
    check_device(cfg.device, cfg.spans.get("device"))
    return cfg


def check_device(device: str, span: Span | None = None) -> str:
    """Refuse, before any work, a device that cannot hold particles and draw random numbers for them:
    a cuda device that does not exist, `meta` (shapes without values), a backend torch lacks."""
    import torch

    dev = None
    try:
        dev = torch.device(device)
        draw = torch.randn(2, generator=torch.Generator(device=dev), device=dev)
        draw.cpu()  # the samples are copied back to be written
    except (RuntimeError, AssertionError, ValueError, NotImplementedError) as exc:
        if dev is not None and dev.type == "cuda" and not torch.cuda.is_available():  # torch's says how to link
            why = "this torch has no CUDA, or the machine no GPU" if torch.version.cuda is None else "no GPU found"
        else:
            why = str(exc).splitlines()[0].split(". ")[0].rstrip(".")
        raise ConfigError(f"device {device!r} is not available here to hold samples ({why}).",
                          span, "Use --device cpu (or a cuda device this machine has).") from None
    return device
