"""Accuracy and cost of each population estimate of s_p against the exact score (MATH §5, §10).

Particles drawn from a law whose smoothed score is known in closed form: a 2-D Gaussian
(the KDE estimates the score of N(μ, Σ + h²I); the Gaussian fit that of N(μ, Σ)) and a 2-D
three-component mixture (its score at noise level h), plus a 16-D Gaussian for the subset KDE.
For each estimator and N: the relative RMS error of s_p over the particles, the median absolute
error of log p, and the seconds of one evaluation at all N particles (one thread, best of 3).
The exact KDE is O(N²) and is skipped above 20,000 particles.

    python benchmarks/estimators.py        # writes benchmarks/results/estimators.md
"""

from __future__ import annotations

from pathlib import Path

import torch
from timing import best_of

from dfc.fields import GaussFit
from dfc.kde import KDE
from dfc.targets import Gaussian, GaussianMixture

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (2_000, 20_000, 100_000)
EXACT_MAX = 20_000
F64 = torch.float64


def laws():
    chol = torch.tensor([[1.5, 0.0], [0.6, 0.8]], dtype=F64)
    yield "2-D Gaussian", Gaussian([1.0, -2.0], (chol @ chol.T).tolist())
    yield "2-D mixture (3)", GaussianMixture([[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]], [0.4, 0.7, 0.5], [0.5, 0.3, 0.2])
    yield "16-D Gaussian", Gaussian([0.0] * 16, torch.diag(torch.linspace(0.5, 2.0, 16, dtype=F64)).tolist())


def estimators(dim: int):
    yield "gauss fit", GaussFit()
    yield "kde exact", KDE(method="exact")
    if dim <= 3:
        yield "kde binned", KDE(method="binned")
    yield "kde subset m=2048", KDE(method="subset", m=2048)
    yield "kde subset m=512", KDE(method="subset", m=512)


def measure(law, est, n: int) -> dict:
    law = law.to(dtype=F64)
    x = law.sample(n, torch.Generator().manual_seed(n))
    best, (s, logp, h) = best_of(lambda: est.query(x, x, 0.0, True), 3)
    exact = law.score(x, h)  # the law smoothed by the estimate's own h (0 for the fit)
    rel = float((s - exact).pow(2).sum(1).mean().sqrt() / exact.pow(2).sum(1).mean().sqrt())
    logp_err = float((logp - law.log_prob(x, h)).abs().median())
    return {"h": h, "rel_rms": rel, "logp_err": logp_err, "seconds": best}


def main() -> None:
    from dfc.io import atomic_write_text

    torch.set_num_threads(1)
    lines = ["# Population estimates of s_p: accuracy and cost", "",
             "`python benchmarks/estimators.py`. Particles from a law whose smoothed score is closed form; error of "
             "s_p relative to the exact score of the law smoothed by the estimate's own h (relative RMS over the "
             "particles), median |error| of log p, and one evaluation at all N particles in seconds (one thread, best "
             "of 3). A KDE's error is its sampling noise, of order 1/sqrt(n h^(D+2)) with n the kernels it uses, plus "
             "the binned KDE's O(δ²/h²). `—`: the O(N²) exact KDE is not run above 20,000.", "",
             "| law | estimator | N | h | s_p rel. RMS error | log p median error | seconds / evaluation |",
             "|---|---|---|---|---|---|---|"]
    for law_name, law in laws():
        for est_name, est in estimators(law.dim):
            for n in SIZES:
                if est_name == "kde exact" and n > EXACT_MAX:
                    lines.append(f"| {law_name} | {est_name} | {n:,} | — | — | — | — |")
                    continue
                r = measure(law, est, n)
                lines.append(f"| {law_name} | {est_name} | {n:,} | {r['h']:.3g} | {r['rel_rms']:.3g} | "
                             f"{r['logp_err']:.3g} | {r['seconds']:.3g} |")
                print(lines[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "estimators.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
