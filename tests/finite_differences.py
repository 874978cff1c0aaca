"""The float64 central finite-difference check the gradient tests share."""

from __future__ import annotations

import torch


def assert_matches_finite_differences(f, params, names, label: str = "", eps: float = 1e-6, per_param: int = 12):
    """``f(*params)`` (a float64 scalar): its autograd gradient against central differences at ``per_param``
    random entries of each parameter, to |fd - an| <= 1e-5 + 1e-4 |fd|. Returns the analytic gradients."""
    params = [p.detach().clone().requires_grad_(True) for p in params]
    analytic = torch.autograd.grad(f(*params), params)
    for k, (name, p, g) in enumerate(zip(names, params, analytic)):
        flat = p.detach().reshape(-1)
        idx = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(1))[:per_param]
        for i in idx:
            plus = [q.detach().clone() for q in params]
            minus = [q.detach().clone() for q in params]
            plus[k].view(-1)[i] += eps
            minus[k].view(-1)[i] -= eps
            fd = (f(*plus) - f(*minus)).item() / (2 * eps)
            an = g.reshape(-1)[i].item()
            assert abs(fd - an) <= 1e-5 + 1e-4 * abs(fd), f"{label}{name}[{int(i)}]: finite diff {fd:.8g} vs {an:.8g}"
    return analytic
