"""Small synthetic data shared by the training and run-directory tests."""

from __future__ import annotations

import torch

from asyncsnn.training import Split


def tiny_split(n: int, seed: int) -> Split:
    """``n`` samples of 8 timesteps x 24 inputs, 3 classes: class c fires input neurons
    8c..8c+7 at a high rate, the rest rarely."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    rate = torch.full((n, 8, 24), 0.02)
    for c in range(3):
        rate[y == c, :, 8 * c : 8 * (c + 1)] = 0.5
    return Split((torch.rand(n, 8, 24, generator=g) < rate).float(), y)
