"""Scheduling policies: which queued spikes are delivered in the next forward step.

A policy gives every queued spike a priority (a float, higher first); the engine takes the
``F`` highest per sample and breaks every tie by the lower neuron index, so deterministic
policies are exactly reproducible. Writing a policy takes a few lines::

    class Youngest(asyncsnn.Scheduler):
        name = "youngest"
        needs_fired_at = True
        def priority(self, q):           # q: QueueView
            return q.fired_at.float()     # newest spikes first

    asyncsnn.run(net, x, dt=1e-3, scheduler=Youngest())

Register it with :func:`register_scheduler` to make it available by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .rng import Stream, step_counter


@dataclass
class QueueView:
    """What a policy may read about the queued spikes of every sample.

    Every tensor has one column per queue slot; the engine ignores the priority of empty slots.

    Attributes:
        pending: (batch, slots) bool, a spike waits in the slot.
        potential: (batch, slots) membrane potential just before the neuron fired (tracked
            only for policies with ``needs_potential = True``).
        fired_at: (batch, slots) int64, forward step of the timestep in which it fired, 0 for
            the input delivery and the input itself (tracked only with
            ``needs_fired_at = True``).
        layer: (slots,) int64, layer of the firing neuron (the input is layer 0).
        neuron: (slots,) int64, global index of the firing neuron.
        timestep, step: the timestep and the forward step about to run (1-based).
    """

    pending: torch.Tensor
    layer: torch.Tensor
    neuron: torch.Tensor
    timestep: int = 0
    step: int = 0
    _potential: torch.Tensor | None = None
    _fired_at: torch.Tensor | None = None
    _rng: object = None

    @property
    def potential(self) -> torch.Tensor:
        """(batch, slots) each queued spike's pre-spike membrane potential (needs
        ``needs_potential = True`` on the policy)."""
        if self._potential is None:
            raise AttributeError("set needs_potential = True on the Scheduler to read potential")
        return self._potential

    @property
    def fired_at(self) -> torch.Tensor:
        """(batch, slots) the forward step at which each queued spike fired (needs
        ``needs_fired_at = True`` on the policy)."""
        if self._fired_at is None:
            raise AttributeError("set needs_fired_at = True on the Scheduler to read fired_at")
        return self._fired_at

    def uniform(self) -> torch.Tensor:
        """(batch, slots) uniform numbers from each sample's own stream, fresh every step."""
        counter = step_counter(self.timestep, self.step)
        return self._rng.uniform(Stream.RANDOM_POLICY, counter, self.pending.shape[1])

    def noise(self) -> torch.Tensor:
        """(batch, slots) uniform numbers drawn once per timestep: a fixed random tie-break
        for each queued spike (cheaper than :meth:`uniform`)."""
        return self._rng.uniform(
            Stream.MOMENTUM_NOISE, self.timestep, self.pending.shape[1], block=1
        )


class Scheduler:
    """Base class of scheduling policies.

    Attributes:
        name: the name it is registered under.
        needs_potential: ``True`` if it reads ``QueueView.potential`` (it then needs
            prioritized input, since input spikes have no membrane potential).
        needs_fired_at: ``True`` if it reads ``QueueView.fired_at``.
    """

    name: str = "custom"
    needs_potential: bool = False
    needs_fired_at: bool = False

    def priority(self, q: QueueView) -> torch.Tensor:
        """(batch, slots) priorities, higher first, finite (no NaN, no infinity) for every
        queued spike; equal priorities go to the lower slot (docs/semantics.md, 3.4)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Random(Scheduler):
    """Uniformly at random among the queued spikes (each sample its own stream)."""

    name = "random"

    def priority(self, q: QueueView) -> torch.Tensor:
        return q.uniform()


@dataclass(repr=True)
class Momentum(Scheduler):
    """Highest pre-spike membrane potential first, ties broken by noise of scale ``lambda_ms``.

    The noise is uniform in ``[0, lambda_ms)``, drawn per queue slot once per timestep (each
    sample its own stream). With ``lambda_ms = 0`` ties go to the lower neuron index.
    """

    lambda_ms: float = 1e-6
    name = "momentum"
    needs_potential = True

    def __post_init__(self) -> None:
        if not self.lambda_ms >= 0:
            raise ValueError(f"Momentum lambda_ms must be >= 0, got {self.lambda_ms}")

    def priority(self, q: QueueView) -> torch.Tensor:
        if self.lambda_ms == 0:
            return q.potential
        return q.potential + self.lambda_ms * q.noise()


class FIFO(Scheduler):
    """In order of firing, oldest first (spikes caused by the input delivery are the oldest)."""

    name = "fifo"
    needs_fired_at = True

    def priority(self, q: QueueView) -> torch.Tensor:
        return -q.fired_at.to(torch.float32)


class Layered(Scheduler):
    """Lowest layer first. With ``F`` >= the widest layer and no biases this reproduces
    layered execution of a feed-forward network exactly."""

    name = "layered"

    def priority(self, q: QueueView) -> torch.Tensor:
        return -q.layer.to(torch.float32).expand(q.pending.shape)


#: the built-in policies, exactly these classes (the compiled kernel knows them)
BUILTIN_POLICIES = (Random, Momentum, FIFO, Layered)

_REGISTRY: dict[str, type[Scheduler]] = {
    "random": Random,
    "momentum": Momentum,
    "fifo": FIFO,
    "layered": Layered,
}


def register_scheduler(name: str, cls: type[Scheduler]) -> None:
    """Make a policy class available by name (``scheduler="name"``)."""
    if not (isinstance(cls, type) and issubclass(cls, Scheduler)):
        raise TypeError(f"{cls!r} is not a subclass of asyncsnn.Scheduler")
    _REGISTRY[name] = cls


def available_schedulers() -> list[str]:
    """The names of the registered policies, sorted (the built-in ones and any added by
    :func:`register_scheduler`)."""
    return sorted(_REGISTRY)


def get_scheduler(spec: str | Scheduler) -> Scheduler:
    """Resolve a policy given by name or instance."""
    if isinstance(spec, Scheduler):
        return spec
    if isinstance(spec, str):
        try:
            return _REGISTRY[spec]()
        except KeyError:
            raise ValueError(
                f"unknown scheduler {spec!r}; choose one of {available_schedulers()} or pass "
                "an asyncsnn.Scheduler instance"
            ) from None
    raise TypeError(f"scheduler must be a name or an asyncsnn.Scheduler, got {spec!r}")
