"""Surrogate gradients for the spike non-linearity.

The forward pass is the Heaviside step ``H(x) = 1 if x > 0 else 0`` (strict) with
``x = V - theta``; only the backward pass differs between surrogates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class _Spike(torch.autograd.Function):
    """Heaviside forward; the backward is ``grad * derivative(x, parameter)``."""

    @staticmethod
    def derivative(x: torch.Tensor, parameter: float) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def forward(ctx, x: torch.Tensor, parameter: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.parameter = parameter
        return (x > 0).to(x.dtype)

    @classmethod
    def backward(cls, ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        return grad * cls.derivative(x, ctx.parameter), None


class _ArcTanSpike(_Spike):
    @staticmethod
    def derivative(x, alpha):
        return (alpha / 2) / (1 + (math.pi * alpha * x / 2) ** 2)


class _FastSigmoidSpike(_Spike):
    @staticmethod
    def derivative(x, slope):
        return 1.0 / (slope * x.abs() + 1.0) ** 2


@dataclass(frozen=True)
class ArcTan:
    r"""Arctan surrogate, as in snnTorch and SpikingJelly.

    .. math::
        \frac{\partial S}{\partial V} = \frac{\alpha / 2}{1 + (\pi \alpha x / 2)^2},
        \quad x = V - \theta

    >>> ArcTan(alpha=2.0)(torch.tensor([0.1, -0.1]))
    tensor([1., 0.])
    """

    alpha: float = 2.0

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ValueError(f"ArcTan alpha must be > 0, got {self.alpha}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _ArcTanSpike.apply(x, self.alpha)


@dataclass(frozen=True)
class FastSigmoid:
    r"""Fast-sigmoid surrogate (SuperSpike, snnTorch's ``fast_sigmoid``).

    .. math:: \frac{\partial S}{\partial V} = \frac{1}{(k |x| + 1)^2}
    """

    slope: float = 25.0

    def __post_init__(self) -> None:
        if not self.slope > 0:
            raise ValueError(f"FastSigmoid slope must be > 0, got {self.slope}")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _FastSigmoidSpike.apply(x, self.slope)


SURROGATES = {"arctan": ArcTan, "fast_sigmoid": FastSigmoid}


def get_surrogate(spec: str | ArcTan | FastSigmoid | None):
    """Resolve a surrogate given by name (``"arctan"``, ``"fast_sigmoid"``) or instance."""
    if spec is None:
        return ArcTan()
    if isinstance(spec, str):
        try:
            return SURROGATES[spec]()
        except KeyError:
            raise ValueError(
                f"unknown surrogate {spec!r}; choose one of {sorted(SURROGATES)}"
            ) from None
    if not callable(spec):
        raise TypeError(f"surrogate must be a name or a callable, got {spec!r}")
    return spec
