"""Counter-based random numbers with one independent stream per sample.

Every random decision of a run (the ``random`` policy, momentum noise, spike and refractory
dropout) is a pure function of ``(sample seed, stream, counter, position)``. A sample therefore
draws the same numbers whether it runs alone or inside a batch, and the same seed gives the same
result on the same machine. The hash is Chris Wellons' ``lowbias32``, with multipliers below
2**31, evaluated in int64 so that no intermediate overflows.
"""

from __future__ import annotations

from enum import IntEnum

import torch

_MASK32 = 0xFFFFFFFF


class Stream(IntEnum):
    """The named random streams of a run (docs/semantics.md, section 7). Each draws
    ``uniform(stream, counter, size)`` with the counter below."""

    #: the ``random`` policy's priorities, fresh every forward step: ``(t << 16) + step``
    RANDOM_POLICY = 7
    #: the ``momentum`` policy's tie-breaking noise, once per timestep: ``t``
    MOMENTUM_NOISE = 8
    #: input spike dropout, once per timestep: ``t``
    INPUT_DROPOUT = 11
    #: network spike dropout, every check of a forward step: ``(t << 16) + step``
    NETWORK_DROPOUT = 12
    #: refractory dropout, every check of a forward step: ``(t << 16) + step``
    REFRACTORY_DROPOUT = 13


def step_counter(timestep: int, step: int) -> int:
    """The counter of forward step ``step`` of timestep ``timestep`` (step 0: the input
    delivery)."""
    return (timestep << 16) + step


_GOLDEN = 0x1E3779B9


def _mul32(x, c: int):
    """``(x * c) mod 2**32`` for ``0 <= x < 2**32`` and ``0 <= c < 2**31`` (no overflow)."""
    return (x * c) & _MASK32


def hash32(x):
    """A well-mixed 32-bit hash (int, or int64 tensor holding values in [0, 2**32)).

    The ``lowbias32`` construction with the multipliers ``0x21F0AAAD`` and ``0x735A2D97``.
    """
    x = x ^ (x >> 16)
    x = _mul32(x, 0x21F0AAAD)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x735A2D97)
    return x ^ (x >> 15)


def sample_seeds(seed: int | torch.Tensor | None, batch: int, device: torch.device | str = "cpu"):
    """Per-sample 32-bit seeds, shape ``(batch,)``.

    ``seed`` may be an int (sample ``b`` gets ``hash(seed, b)``), ``None`` (seed 0), or a tensor
    of ``batch`` per-sample seeds used as given: running sample ``b`` alone with
    ``seed=sample_seeds(s, B)[b:b + 1]`` reproduces it exactly.
    """
    if isinstance(seed, torch.Tensor):
        if seed.shape != (batch,):
            raise ValueError(
                f"a seed tensor must hold one seed per sample: expected shape ({batch},), "
                f"got {tuple(seed.shape)}"
            )
        if seed.is_floating_point() or seed.is_complex() or seed.dtype == torch.bool:
            raise TypeError(f"per-sample seeds must be an integer tensor, got {seed.dtype}")
        return (seed.to(device=device, dtype=torch.int64)) & _MASK32
    if seed is None:
        seed = 0
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, a tensor of per-sample seeds or None, got {seed!r}")
    key = hash32(hash32((seed & _MASK32) ^ _GOLDEN) ^ ((seed >> 32) & _MASK32))
    b = torch.arange(batch, dtype=torch.int64, device=device)
    return hash32(key ^ _mul32(b, 0x6C8E9CF5))


class SampleRNG:
    """Uniform numbers in ``[0, 1)`` from per-sample streams.

    ``uniform(stream, counter, size)[b, i]`` is a pure function of (seed of sample ``b``,
    ``stream``, ``counter``, ``i``). Consecutive counters are computed in blocks and cached, so
    a per-step draw costs a slice; the values do not depend on the blocking.

    >>> rng = SampleRNG(sample_seeds(0, 2))
    >>> rng.uniform(stream=1, counter=0, size=3).shape
    torch.Size([2, 3])
    """

    block_elements = 1 << 20

    def __init__(self, seeds: torch.Tensor) -> None:
        self.seeds = seeds
        self._mixed = hash32(seeds ^ 0x5BD1E995)[:, None, None]
        self._positions: dict[int, torch.Tensor] = {}
        self._blocks: dict[tuple[int, int], tuple[int, int, torch.Tensor]] = {}

    def _counter_key(self, stream: int, counter: int) -> int:
        return hash32(hash32((stream * 0x27D4EB2F) & _MASK32) ^ (counter & _MASK32))

    def uniform(self, stream: int, counter: int, size: int, block: int = 8) -> torch.Tensor:
        """Shape ``(batch, size)``, float32; ``block``: how many consecutive counters to
        compute at once (the next calls with counter + 1, ... are then a slice)."""
        cached = self._blocks.get((stream, size))
        if cached is not None and cached[0] <= counter < cached[1]:
            return cached[2][:, counter - cached[0]]
        pos = self._positions.get(size)
        if pos is None:
            pos = _mul32(torch.arange(size, dtype=torch.int64, device=self.seeds.device), _GOLDEN)
            self._positions[size] = pos
        n = max(1, min(block, self.block_elements // max(1, size * len(self.seeds))))
        keys = torch.tensor(
            [self._counter_key(stream, counter + i) for i in range(n)],
            dtype=torch.int64,
            device=self.seeds.device,
        )
        bits = hash32((self._mixed + keys[None, :, None] + pos[None, None, :]) & _MASK32)
        block = (bits >> 8).to(torch.float32) * (1.0 / (1 << 24))
        self._blocks[(stream, size)] = (counter, counter + n, block)
        return block[:, 0]
