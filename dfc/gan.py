"""Algorithm 1 of the paper (MATH §8): a GAN as a particle flow with a generator.

One iteration: x = G_θ(z); a logistic discriminator d (D = sigmoid(d) is the probability of
"real"); the particle step x' = x + η β(x) ∇d(x) with the spec's β (D, 1 − D or 1); then the
generator regresses onto the moved particles, θ ← θ − lr ∇_θ ½‖G_θ(z) − stopgrad(x')‖².
Exactly (autograd): that gradient is η × the generator-loss gradient of the saturating GAN
(E log(1 − D(G(z))), β = D) or of the non-saturating one (−E log D(G(z)), β = 1 − D).
"""

from __future__ import annotations

import torch

BETAS = {"D": lambda p: p, "1-D": lambda p: 1 - p, "1": lambda p: torch.ones_like(p)}


def particle_step(x: torch.Tensor, d, beta: str, eta: float) -> torch.Tensor:
    """x' = x + η β(x) ∇d(x) for the logit network `d` (MATH §8, Alg. 1); no graph is kept."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logit = d(xg).reshape(-1)
        (grad,) = torch.autograd.grad(logit.sum(), xg)
    weight = BETAS[beta](torch.sigmoid(logit.detach()))[:, None]
    return (x + eta * weight * grad).detach()


def generator_regression_loss(g, z: torch.Tensor, x_next: torch.Tensor) -> torch.Tensor:
    """½‖G_θ(z) − stopgrad(x')‖², summed over coordinates and averaged over the batch."""
    return 0.5 * (g(z) - x_next.detach()).pow(2).sum(1).mean()


def discriminator_loss(d, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Logistic loss: real labelled 1, fake 0 (its optimum is d* = log(Q/p), MATH §1)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    lr, lf = d(real).reshape(-1), d(fake.detach()).reshape(-1)
    return bce(lr, torch.ones_like(lr)) + bce(lf, torch.zeros_like(lf))
