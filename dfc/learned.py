"""Learned fields at run time (MATH §5): a score network as a target-like object, and the
time-indexed discriminator stack as the drift's GAN field.

- `LearnedScore` wraps the EMA weights of a `dfc train score` checkpoint. It has the interface
  `dfc.fields.Drift` asks of a target (`score(y, σ)`, `dim`, `device`, `dtype`, `to`, `sample`,
  `bounds`, `gaussian`), so `s_Q(x, t) = u · s_q_σ(t)(u x)` comes out of the unchanged drift for
  any spec's σ and u, from one network trained over σ. It has no log-density: a β that uses
  D(x, t) needs the discriminator stack for D.
- `DiscStack` holds the discriminators d_k of Algorithm 2 (independent networks, one per grid
  step, or one shared d(x, t)) and implements `gan_field(x, t, need_logit) -> (∇d, d)`, the hook
  `Drift.fields` uses in place of `s_Q − s_p` (∇d ≈ s_Q − s_p, since the logistic optimum is
  d* = log(Q_t/p_t), MATH §1). Replaying the stored steps from fresh x ~ p_0 is Algorithm 3.

Inputs of a discriminator at time t are normalised by the exact moments of Q_t's data part:
centre m/u(t) and scale sqrt(v + σ(t)²)/u(t), with m the data mean and v its mean per-coordinate
variance, so every d_k sees inputs of unit scale whatever σ(t) (80 at the start of the VE path).

Checkpoints load through `dfc.checkpoint` (never unpickled) and are checked against the run: the
data set, the spec and its parameters, and for independent networks the exact grid.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dfc import checkpoint
from dfc.errors import ConfigError, DataError
from dfc.nets import Discriminator, ScoreNet, build

SIGMA_FLOOR = 1e-6  # the score is evaluated at σ ≥ SIGMA_FLOOR · scale (σ = 0 has no noise to remove)

_CACHE: dict = {}


def _cached_load(path: Path, kind: str):
    """checkpoint.load memoised on (path, size, mtime): a bench or a sweep loads each file once."""
    try:
        st = os.stat(path)
        key = (str(path.resolve()), kind, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    out = checkpoint.load(path, kind)
    if key is not None:
        if len(_CACHE) >= 4:  # a few files alive at most: checkpoints can be large
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = out
    return out


def resolve(path: str | Path, spec=None) -> Path:
    """A checkpoint path: as given (relative to the current directory), else relative to the spec's file."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or spec is None or not spec.ir.file:
        return p
    beside = Path(spec.ir.file).parent / p
    return beside if beside.exists() else p


# ---------------------------------------------------------------------------------------
# The learned score


class LearnedScore:
    """s_q_σ(y) = (D_θ(y; σ) − y)/σ² from a score checkpoint's EMA weights (a target-like object)."""

    gaussian = None

    def __init__(self, net: ScoreNet, header: dict, path: str | Path, data_target=None):
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.header, self.path, self.data_target = header, str(path), data_target
        self.dim = net.dim
        self.name = f"learned:{Path(path).stem}"
        self.info = header["data"]  # a checkpoint.Header: a missing entry is a corrupt-checkpoint error
        self._dtype = next(net.parameters()).dtype
        self._device = next(net.parameters()).device

    @classmethod
    def load(cls, path: str | Path, device="cpu", dtype=torch.float32, data_target=None) -> "LearnedScore":
        path = Path(path)
        tensors, header = _cached_load(path, "score")
        try:
            net = build(header["arch"], header.get("normalisation"))
        except (KeyError, TypeError) as exc:
            raise DataError(f"checkpoint {path} has an architecture this dfc does not know ({exc}).", None,
                            checkpoint.HINT) from None
        if not isinstance(net, ScoreNet):
            raise DataError(f"checkpoint {path} is not a score network.", None, checkpoint.HINT)
        checkpoint.load_module(net, tensors, "ema", path)
        return cls(net.to(device=device, dtype=dtype), header, path, data_target)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self._dtype

    def to(self, device=None, dtype=None) -> "LearnedScore":
        device = self._device if device is None else torch.device(device)
        dtype = self._dtype if dtype is None else dtype
        if device == self._device and dtype == self._dtype:
            return self
        import copy

        net = copy.deepcopy(self.net).to(device=device, dtype=dtype)
        data = self.data_target.to(device=device, dtype=dtype) if self.data_target is not None else None
        return LearnedScore(net, self.header, self.path, data)

    def score(self, y: torch.Tensor, sigma) -> torch.Tensor:
        """∇ log q_σ(y) of the data smoothed by noise σ (a python float), in data units."""
        s = max(float(sigma), SIGMA_FLOOR * float(self.net.scale))
        if y.dtype != self._dtype or y.device != self._device:
            return self.net.score(y.to(self._device, self._dtype), s).to(y.device, y.dtype)
        return self.net.score(y, s)

    def log_prob_and_score(self, y, sigma):
        raise ConfigError("a learned score has no log-density, and this spec's β uses D(x, t) (or the closed "
                          "form of s_p needs one).", None,
                          "Give D by a discriminator stack: fields = learned(score = \"...\") + disc(path = \"...\").")

    def log_prob(self, y, sigma):
        return self.log_prob_and_score(y, sigma)

    def sample(self, n: int, generator=None) -> torch.Tensor:
        if self.data_target is None:
            raise ConfigError("`prior target` draws from the data, and this learned score was given none.")
        return self.data_target.sample(n, generator)

    def bounds(self):
        if self.data_target is not None:
            return self.data_target.bounds()
        c, s = self.net.shift.cpu().numpy(), float(self.net.scale)
        k = min(self.dim, 2)
        return tuple(float(v) - 4 * s for v in c[:k]), tuple(float(v) + 4 * s for v in c[:k])

    def __repr__(self) -> str:
        return f"LearnedScore({self.path!r}, dim={self.dim})"


def load_score(path: str | Path, device="cpu", dtype=torch.float32, data_target=None) -> LearnedScore:
    """A score checkpoint (`dfc train score`) as a target-like object."""
    return LearnedScore.load(path, device, dtype, data_target)


def score_error(score, target, sigmas=(0.1, 0.5, 1.0, 2.0), n: int = 4000, seed: int = 0) -> dict:
    """Relative L2 error ‖s_θ − s‖ / ‖s‖ of a learned score against an exact target's, on samples of q_σ."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for s in sigmas:
        y = target.sample(n, gen).to(torch.float32)
        y = y + s * torch.randn(y.shape, generator=gen)
        with torch.no_grad():
            exact = target.score(y.double(), s).float()
            diff = score.score(y, s) - exact
        out[float(s)] = float(diff.pow(2).sum(1).mean().sqrt() / exact.pow(2).sum(1).mean().sqrt())
    return out


def score_record(path: str | Path | None, target_name: str) -> dict:
    """How a stack's particles got s_Q during training (stored in its header)."""
    if path is None:
        return {"kind": "exact", "target": target_name}
    _, header = checkpoint.read_header(path)
    return {"kind": "learned", "file": Path(path).name, "sha256": header.get("tensors_sha256", "")[:16]}


# ---------------------------------------------------------------------------------------
# The discriminator stack (Algorithms 2 and 3)


class DiscStack:
    """d_k(x) for the grid times t_k of one spec (independent), or one d(x, t) (shared)."""

    def __init__(self, variant: str, arch: dict, nets: list, info: dict, spec_rec: dict, score_rec: dict,
                 config: dict, mean, var: float, ts, sigma, u, t0: float, t1: float):
        self.variant, self.arch, self.nets = variant, arch, nets
        self.info, self.spec_rec, self.score_rec, self.config = info, spec_rec, score_rec, config
        self.mean = torch.as_tensor(mean, dtype=torch.float64)
        self.var = float(var)
        self.ts, self.sigma, self.u = (np.asarray(v, dtype=np.float64) for v in (ts, sigma, u))
        self.t0, self.t1 = float(t0), float(t1)
        self.index = {float(t): k for k, t in enumerate(self.ts)}
        self.fitted = len(nets) if variant == "independent" else len(self.ts) - 1
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.spec = None  # bound by check_run (the shared network evaluates σ(t), u(t) at any t)
        self.eval_s = 0.0
        self._norm_cache: dict = {}

    # ---- construction
    @classmethod
    def empty(cls, cfg, info, spec_rec, score_rec, mean, var, ts, sigma, u, t0, t1, device="cpu") -> "DiscStack":
        shared = cfg.variant == "shared"
        arch = Discriminator(int(info["dim"]), cfg.hidden, cfg.depth, shared).arch()
        nets = [Discriminator(int(info["dim"]), cfg.hidden, cfg.depth, True)] if shared else []
        st = cls(cfg.variant, arch, nets, info, spec_rec, score_rec, asdict(cfg), mean, var, ts, sigma, u, t0, t1)
        st.fitted = 0
        return st.to(device)

    def new_net(self, k: int, warm: bool = True, seed: int = 0) -> Discriminator:
        """The network d_k (independent variant): d_{k-1}'s weights when `warm`, else an initialisation
        drawn from a generator seeded by (seed, k), so a resumed run builds the same d_k."""
        assert len(self.nets) == k
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + k)
            net = Discriminator(self.arch["dim"], self.arch["hidden"], self.arch["depth"], False).to(self.device)
        if warm and k > 0:
            net.load_state_dict(self.nets[k - 1].state_dict())
        self.nets.append(net)
        return net

    def to(self, device) -> "DiscStack":
        self.device = torch.device(device)
        for net in self.nets:
            net.to(self.device)
        self._norm_cache.clear()
        return self

    # ---- normalisation of inputs at step k (or time t)
    def _norm(self, sigma: float, u: float):
        key = (sigma, u)
        out = self._norm_cache.get(key)
        if out is None:
            centre = (self.mean / u).to(self.device, self.dtype)
            scale = math.sqrt(self.var + sigma * sigma) / u
            out = self._norm_cache[key] = (centre, scale)
        return out

    def normalise(self, x: torch.Tensor, k: int) -> torch.Tensor:
        centre, scale = self._norm(float(self.sigma[k]), float(self.u[k]))
        return (x - centre) / scale

    def noised_data(self, y: torch.Tensor, eps: torch.Tensor, steps_: torch.Tensor) -> torch.Tensor:
        """Normalised samples of Q_{t_j}: ((y + σ_j ε)/u_j − m/u_j) / s_j, one step j per row."""
        s = torch.as_tensor(self.sigma, dtype=y.dtype, device=y.device)[steps_][:, None]
        u = torch.as_tensor(self.u, dtype=y.dtype, device=y.device)[steps_][:, None]
        scale = torch.sqrt(self.var + s * s) / u
        return ((y + s * eps) / u - self.mean.to(y.device, y.dtype) / u) / scale

    def cond(self, steps_: torch.Tensor) -> torch.Tensor:
        s = torch.as_tensor(self.sigma, dtype=self.dtype, device=self.device)[steps_]
        t = torch.as_tensor(self.ts, dtype=self.dtype, device=self.device)[steps_]
        return self._cond(s, t)

    def _cond(self, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        span = max(self.t1 - self.t0, 1e-12)
        return torch.stack([torch.log(s.clamp_min(1e-8)) / 4, (t - self.t0) / span], 1)

    # ---- the GAN field
    def gan_field(self, x: torch.Tensor, t: float, need_logit: bool = False):
        """(∇_x d(x, t), d(x, t)): the GAN field s_Q − s_p and the logit of D, at the particles x."""
        start = time.perf_counter()
        t = float(t)
        if self.variant == "independent":
            k = self.index.get(t)
            if k is None or k >= self.fitted:
                raise ConfigError(f"the discriminator stack has networks at {self.fitted} grid times of spec "
                                  f"{self.spec_rec['name']!r}; t = {t:.6g} is not one of them.", None,
                                  "Sample with the grid, steps, clock and euler solver the stack was trained with.")
            net = self.nets[k]
            sigma, u = float(self.sigma[k]), float(self.u[k])
            cond = None
        else:
            net = self.nets[0]
            k = self.index.get(t)
            if k is not None:
                sigma, u = float(self.sigma[k]), float(self.u[k])
            elif self.spec is not None:
                sigma, u = self.spec.at("sigma", t), self.spec.at("u", t)
            else:
                raise ConfigError(f"the shared discriminator needs its spec to evaluate t = {t:.6g} off its grid.")
            cond = self._cond(torch.full((x.shape[0],), sigma, dtype=self.dtype, device=self.device),
                              torch.full((x.shape[0],), t, dtype=self.dtype, device=self.device))
        centre, scale = self._norm(sigma, u)
        xin = x.to(self.device, self.dtype)
        with torch.enable_grad():
            z = ((xin - centre) / scale).detach().requires_grad_(True)
            logit = net(z, cond)
            (grad,) = torch.autograd.grad(logit.sum(), z)
        grad = (grad / scale).to(x.device, x.dtype)
        self.eval_s += time.perf_counter() - start
        return grad, (logit.detach().to(x.device, x.dtype) if need_logit else None)

    # ---- checkpoints
    def header(self) -> dict:
        return {"kind": "disc", "variant": self.variant, "arch": self.arch,
                "normalisation": {"mean": [float(v) for v in self.mean], "var": self.var,
                                  "rule": "z = (x - mean/u(t)) / (sqrt(var + sigma(t)^2)/u(t))"},
                "data": self.info, "spec": self.spec_rec, "score": self.score_rec, "config": self.config}

    def tensors(self, k: int) -> dict[str, torch.Tensor]:
        out = {"grid.t": torch.as_tensor(self.ts), "grid.sigma": torch.as_tensor(self.sigma),
               "grid.u": torch.as_tensor(self.u)}
        nets = self.nets[:k] if self.variant == "independent" else self.nets
        for i, net in enumerate(nets):
            prefix = f"net.{i}" if self.variant == "independent" else "net"
            out.update({f"{prefix}.{name}": v for name, v in net.state_dict().items()})
        return out

    def load_nets(self, tensors: dict, k: int, path) -> None:
        """Networks d_0..d_{k-1} (independent) or the shared one from a checkpoint's tensors."""
        if self.variant == "independent":
            self.nets = []
            for i in range(k):
                net = Discriminator(self.arch["dim"], self.arch["hidden"], self.arch["depth"], False)
                checkpoint.load_module(net, tensors, f"net.{i}", path)
                self.nets.append(net.to(self.device))
            self.fitted = k
        else:
            checkpoint.load_module(self.nets[0], tensors, "net", path)
            self.fitted = k

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> "DiscStack":
        path = Path(path)
        tensors, h = _cached_load(path, "disc")
        try:
            K = int(h["progress"]["step"])
            if not h["progress"].get("complete"):
                raise DataError(f"discriminator stack {path} is unfinished ({K} of {h['progress']['total']} steps).",
                                None, "Finish it with `dfc train disc ... --resume` (same options and --out).")
            variant = h["variant"]
            norm = h["normalisation"]
            st = cls(variant, h["arch"], [], h["data"], h["spec"], h["score"], h["config"], norm["mean"], norm["var"],
                     tensors["grid.t"].numpy(), tensors["grid.sigma"].numpy(), tensors["grid.u"].numpy(),
                     h["spec"]["time"][0], h["spec"]["time"][1])
            if variant == "shared":
                st.nets = [Discriminator(h["arch"]["dim"], h["arch"]["hidden"], h["arch"]["depth"], True)]
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise DataError(f"checkpoint {path} is not a discriminator stack this dfc reads (missing {exc}).", None,
                            checkpoint.HINT) from None
        st.load_nets(tensors, K, path)
        for net in st.nets:
            net.eval()
            for p in net.parameters():
                p.requires_grad_(False)
        return st.to(device)

    def check_run(self, spec, target_name: str, target, path, span=None) -> "DiscStack":
        """Refuse a run this stack was not trained for (naming the mismatch); bind the spec."""
        from dfc.data import same_data

        def fail(why: str, hint: str):
            return DataError(f"discriminator stack {path} does not match this run: {why}.", span, hint)

        why = same_data(self.info, target_name, target)
        if why:
            raise fail(why, "Train a stack on the run's data, or run on the stack's data (--target).")
        rec = self.spec_rec
        # The same dynamics (six functions, prior, parameter values) under any name is the same run: a
        # child spec that only sets `run fields = ... + disc(path = ...)` uses its parent's stack. Otherwise
        # the error names the most telling difference: the spec, its parameters, or its edited text.
        if rec.get("dynamics") != spec.dynamics_digest:  # (a stack without one predates the digest: retrain)
            if rec["name"] != spec.name:
                raise fail(f"it was trained for spec {rec['name']!r}, and the run's spec {spec.name!r} moves its "
                           f"particles differently", f"Train a stack for {spec.name} (dfc train disc {spec.name} "
                                                      f"...), or run {rec['name']} (or a spec that extends it and "
                                                      f"changes only its run block).")
            params = {str(k): float(v) for k, v in spec.params.items()}
            diff = [k for k in sorted(set(params) | set(rec["params"]))
                    if not _close(params.get(k), rec["params"].get(k))]
            if diff:
                shown = "; ".join(f"{k} = {rec['params'].get(k)} in the stack, {params.get(k)} here" for k in diff[:3])
                raise fail(f"spec {spec.name!r} has other parameters ({shown})", "Use the stack's --set values, or "
                                                                               "train a stack for these.")
            raise fail(f"spec {spec.name!r} has changed since the stack was trained (its functions or prior "
                       f"differ)", f"Train the stack again (dfc train disc {spec.name} ...).")
        if self.variant == "independent":
            ts = spec.grid()
            if len(ts) != len(self.ts) or not np.allclose(ts, self.ts, rtol=1e-9, atol=1e-12):
                run = spec.run.describe()
                raise fail(f"its {len(self.ts) - 1} networks sit on the grid of steps = {rec['steps']}, clock = "
                           f"{rec['clock']}, grid = {rec['grid']}, time = {rec['time']}, and the run has steps = "
                           f"{spec.run.steps}, clock = {spec.run.clock}, grid = {run['grid']}, time = "
                           f"{list(spec.run.time)}", "Sample on the stack's grid, or train a shared stack "
                                                     "(--variant shared), which takes any t.")
            if spec.run.solver != "euler":
                raise fail(f"independent networks replay Euler steps, and the run's solver is {spec.run.solver}",
                           "Use --solver euler.")
        elif spec.t0 < self.t0 - 1e-12 or spec.t1 > self.t1 + 1e-12:
            raise fail(f"it was trained on t in [{self.t0:g}, {self.t1:g}] and the run spans "
                       f"[{spec.t0:g}, {spec.t1:g}]", "Keep the run's time inside the stack's.")
        self.spec = spec
        return self


def _close(a, b) -> bool:
    return a is not None and b is not None and math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)


def load_stack(path: str | Path, spec, target, device="cpu", span=None) -> DiscStack:
    """The stack at `path`, checked against the run of `spec` on `target` (Algorithm 3)."""
    path = Path(path)
    try:
        stack = DiscStack.load(path, device)
    except DataError as exc:
        raise DataError(exc.message, span, exc.hint) from None
    return stack.check_run(spec, spec.run.describe()["target"], target, path, span)


__all__ = ["LearnedScore", "DiscStack", "load_score", "load_stack", "score_error", "resolve", "score_record"]
