"""LaTeX of a spec's SDE (MATH §2), its scaling functions and its decomposition."""

from __future__ import annotations

import sympy as sp

from dfc.symbolic import D

_NAMES = {"f": r"f(x,t)", "beta": r"\beta(t)", "g2": r"g^2(t)", "lambda2": r"\lambda^2(t)",
          "sigma": r"\sigma(t)", "u": r"u(t)"}


def _tex(e: sp.Expr) -> str:
    return sp.latex(e, symbol_names={D: r"D(x,t)"})


def spec_latex(spec) -> str:
    """An `aligned` block: the SDE, the six functions (params symbolic), the decomposed weights."""
    ir = spec.ir
    terms = {t.name: t.expr for t in ir.terms}
    w_gan = sp.simplify(terms["beta"] - terms["g2"] / 2)
    lines = [
        r"\mathrm{d}x_t &= \Big[f(x_t,t) + \big(\beta - \tfrac12 g^2\big)\big(s_Q - s_p\big)(x_t,t)"
        r" + \tfrac12 g^2\, s_Q(x_t,t)\Big]\mathrm{d}t + \sqrt{g^2 - \lambda^2}\,\mathrm{d}W_t",
        r"s_Q(x,t) &= u(t)\,\nabla\log q_{\sigma(t)}\big(u(t)\,x\big)",
    ]
    for name in ("f", "beta", "g2", "lambda2", "sigma", "u"):
        lines.append(f"{_NAMES[name]} &= {_tex(terms[name])}")
    lines.append(r"\beta - \tfrac12 g^2 &= " + _tex(w_gan))
    lines.append(r"g^2 - \lambda^2 &= " + _tex(sp.simplify(terms["g2"] - terms["lambda2"])))
    return "\\begin{aligned}\n" + " \\\\\n".join(lines) + "\n\\end{aligned}"

