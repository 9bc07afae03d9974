"""Small synthetic data shared by the training and run-directory tests."""

from __future__ import annotations

import torch

from asyncsnn.training import Split


def tiny_split(
    n: int, seed: int, classes: int = 3, timesteps: int = 8, background: float = 0.02
) -> Split:
    """``n`` samples of ``timesteps`` x 24 inputs, ``classes`` classes: class c fires its own
    block of 24 / ``classes`` input neurons at a high rate (0.5), the rest at ``background``."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    rate = torch.full((n, timesteps, 24), background)
    width = 24 // classes
    for c in range(classes):
        rate[y == c, :, width * c : width * (c + 1)] = 0.5
    return Split((torch.rand(n, timesteps, 24, generator=g) < rate).float(), y)
