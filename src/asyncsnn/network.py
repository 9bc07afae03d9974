"""The network's structure: LIF populations connected by projections.

A :class:`Network` is an ``nn.Module`` holding the projections' modules (so ``parameters()``,
``.to(device)`` and ``state_dict()`` work as usual) and per-neuron ``tau_m``, threshold and
``tau_syn`` buffers (``tau_syn = 0``: no synaptic current); each population declares its
reset (``"zero"`` or ``"subtract"``). Neurons are numbered globally: the input first, then
each population in network order, each in the flattened order of its module output
(channel, row, column).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .connectivity import (
    PARAMETER_FREE,
    SUPPORTED,
    WEIGHTED,
    apply_chain,
    chain_footprint,
)
from .dynamics import LIF, RESETS, NeuronModel

INPUT = "input"


@dataclass(frozen=True)
class Population:
    """A group of LIF neurons fed by one or more projections.

    ``offset`` is the global index of its first neuron (the input occupies ``0..n_in-1``);
    ``layer`` is its position in network order, the input being layer 0.
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    layer: int
    spiking: bool = True
    #: the neuron model of its neurons (docs/semantics.md, section 2)
    neuron: NeuronModel = LIF
    #: what a spike does to the membrane: ``"zero"`` (``V <- 0``) or ``"subtract"``
    #: (``V <- V - theta``)
    reset: str = "zero"

    @property
    def size(self) -> int:
        """The number of neurons (the product of ``shape``)."""
        return math.prod(self.shape)

    @property
    def slice(self) -> slice:
        """This population's neurons in the global numbering (the input's come first)."""
        return slice(self.offset, self.offset + self.size)


class Projection(nn.Module):
    """A chain of linear modules from a source (``"input"`` or a population) to a population.

    A projection whose source comes at or after its target in network order is *recurrent*:
    layered execution feeds it the previous timestep's spikes.
    """

    def __init__(self, source: str, target: str, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        modules = list(modules)
        for m in modules:
            if not isinstance(m, SUPPORTED):
                raise TypeError(
                    f"unsupported module {type(m).__name__} in the projection {source} -> "
                    f"{target}: use nn.Linear, nn.Conv2d, nn.AvgPool2d, asyncsnn.SumPool2d, "
                    "nn.Flatten or nn.Identity"
                )
        if sum(isinstance(m, WEIGHTED) for m in modules) > 1:
            raise ValueError(
                f"the projection {source} -> {target} has more than one weighted module; put "
                "a population between them"
            )
        self.source = source
        self.target = target
        self.chain = nn.Sequential(*modules)

    @property
    def weighted(self) -> nn.Module | None:
        """The chain's weighted module (``Linear`` or ``Conv2d``), or ``None``."""
        return next((m for m in self.chain if isinstance(m, WEIGHTED)), None)

    def apply(self, x: torch.Tensor, bias: bool = False) -> torch.Tensor:
        """Dense delivery of a batch of source activity ``x`` (batch, *source shape)."""
        return apply_chain(self.chain, x, bias).flatten(1)

    def extra_repr(self) -> str:
        return f"{self.source} -> {self.target}"


@dataclass
class Tables:
    """Index tables of the whole network, built once per structure (see ``Network.tables``)."""

    n_input: int
    n_neurons: int  # input + all populations
    entries_src: torch.Tensor  # global source neuron of each entry
    entries_dst: torch.Tensor  # global target neuron
    entries_widx: torch.Tensor  # index into ``Network.weight_vector()``
    entries_coef: torch.Tensor
    fanout: torch.Tensor  # (n_neurons,) distinct targets per source neuron
    has_outgoing: torch.Tensor  # (n_neurons,) bool
    derived: dict = field(default_factory=dict)  # per-engine tables built from these, cached


class Network(nn.Module):
    """LIF populations and the projections between them.

    Args:
        input_shape: shape of one input frame (without time and batch), e.g. ``(2, 34, 34)``.

    >>> net = Network(input_shape=(4,))
    >>> net.add_population("hidden", [nn.Linear(4, 3, bias=False)], tau_m=1e-3, threshold=0.3)
    >>> net.add_population("out", [nn.Linear(3, 2, bias=False)], source="hidden")
    >>> net.n_neurons
    5
    """

    def __init__(self, input_shape: Sequence[int]) -> None:
        super().__init__()
        input_shape = tuple(int(s) for s in input_shape)
        if not input_shape or any(s < 1 for s in input_shape):
            raise ValueError(f"input_shape must be non-empty and positive, got {input_shape}")
        self.input_shape = input_shape
        self.populations: list[Population] = []
        self.projections = nn.ModuleList()
        self.register_buffer("tau_m", torch.zeros(0))
        self.register_buffer("threshold", torch.zeros(0))
        self.register_buffer("tau_syn", torch.zeros(0))
        self._tables: Tables | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def sequential(
        cls,
        modules: Sequence[nn.Module],
        *,
        input_shape: Sequence[int] | None = None,
        tau_m: float | Sequence[float] = 1e-3,
        threshold: float | Sequence[float] = 1.0,
        readout: str = "spikes",
        tau_syn: float | Sequence[float] | None = None,
        reset: str | Sequence[str] = "zero",
    ) -> Network:
        """A feed-forward network with a LIF population after each weighted module.

        Parameter-free modules (pooling, flatten) join the projection of the weighted module
        before them (or, before the first weighted module, the first projection).

        Args:
            modules: ``nn.Linear``, ``nn.Conv2d``, ``nn.AvgPool2d``, ``SumPool2d``, ``nn.Flatten``.
            input_shape: required unless the first weighted module is ``nn.Linear``.
            tau_m: membrane time constant in seconds, one value or one per population (each a
                float or a per-neuron tensor).
            threshold: firing threshold, one value or one per population.
            tau_syn: synaptic time constant in seconds (current-based LIF), one value or one
                per population; ``None`` or 0: no synaptic current (the plain LIF).
            reset: ``"zero"`` or ``"subtract"``, one for all or one per population.
            readout: ``"spikes"`` (the last population spikes) or ``"membrane"`` (it only
                integrates and its membrane potential is the output).
        """
        groups: list[list[nn.Module]] = []
        pending: list[nn.Module] = []
        for m in modules:
            if isinstance(m, WEIGHTED):
                groups.append(pending + [m])
                pending = []
            elif isinstance(m, PARAMETER_FREE):
                if groups:
                    groups[-1].append(m)
                else:
                    pending.append(m)
            else:
                raise TypeError(
                    f"unsupported module {type(m).__name__}: Network.sequential takes nn.Linear, "
                    "nn.Conv2d, nn.AvgPool2d, asyncsnn.SumPool2d, nn.Flatten and nn.Identity"
                )
        if not groups:
            raise ValueError("Network.sequential needs at least one nn.Linear or nn.Conv2d")
        if pending:
            groups[-1].extend(pending)
        if readout not in ("spikes", "membrane"):
            raise ValueError(f"readout must be 'spikes' or 'membrane', got {readout!r}")
        if input_shape is None:
            first = next(m for m in groups[0] if isinstance(m, WEIGHTED))
            if not isinstance(first, nn.Linear) or groups[0][0] is not first:
                raise ValueError(
                    "input_shape is required when the network does not start with nn.Linear"
                )
            input_shape = (first.in_features,)
        taus = _per_population(tau_m, len(groups), "tau_m")
        thresholds = _per_population(threshold, len(groups), "threshold")
        tau_syns = _per_population(tau_syn, len(groups), "tau_syn")
        resets = _per_population(reset, len(groups), "reset")
        net = cls(input_shape)
        source = INPUT
        for i, chain in enumerate(groups):
            last = i == len(groups) - 1
            name = "output" if last else f"hidden{i + 1}"
            net.add_population(
                name,
                chain,
                source=source,
                tau_m=taus[i],
                threshold=thresholds[i],
                tau_syn=tau_syns[i],
                reset=resets[i],
                spiking=not (last and readout == "membrane"),
            )
            source = name
        return net

    def add_population(
        self,
        name: str,
        modules: Sequence[nn.Module],
        *,
        source: str = INPUT,
        tau_m: float | torch.Tensor = 1e-3,
        threshold: float | torch.Tensor = 1.0,
        spiking: bool = True,
        tau_syn: float | torch.Tensor | None = None,
        reset: str = "zero",
    ) -> Population:
        """Append a LIF population fed from ``source`` through ``modules``.

        Args:
            tau_m: membrane time constant in seconds (> 0), scalar or per neuron.
            threshold: firing threshold (> 0), scalar or per neuron.
            spiking: ``False`` for a non-spiking readout that only integrates.
            tau_syn: synaptic time constant in seconds (>= 0), scalar or per neuron: a
                current-based LIF whose current decays by ``exp(-dt/tau_syn)`` per timestep;
                ``None`` or 0 (for a neuron): no synaptic current, the plain LIF.
            reset: ``"zero"`` (``V <- 0`` on a spike) or ``"subtract"`` (``V <- V - theta``).
        """
        if not isinstance(name, str) or not name or name == INPUT:
            raise ValueError(f"a population needs a non-empty name other than {INPUT!r}")
        if any(p.name == name for p in self.populations):
            raise ValueError(f"a population named {name!r} already exists")
        if reset not in RESETS:
            raise ValueError(
                f"reset of population {name!r} must be one of {list(RESETS)}, got {reset!r}"
            )
        src_shape = self._shape_of(source)
        proj = Projection(source, name, modules)
        _, shape = chain_footprint(proj.chain, src_shape)
        n = math.prod(shape)
        layer = len(self.populations) + 1
        pop = Population(name, tuple(shape), self.n_neurons, layer, spiking, reset=reset)
        tau = _per_neuron(tau_m, n, "tau_m", name)
        thr = _per_neuron(threshold, n, "threshold", name)
        syn = _per_neuron(0.0 if tau_syn is None else tau_syn, n, "tau_syn", name, zero=True)
        self.populations.append(pop)
        self.projections.append(proj)
        self.tau_m = torch.cat([self.tau_m, tau.to(self.tau_m)])
        self.threshold = torch.cat([self.threshold, thr.to(self.threshold)])
        self.tau_syn = torch.cat([self.tau_syn, syn.to(self.tau_syn)])
        self._tables = None
        return pop

    def connect(self, source: str, target: str, modules: Sequence[nn.Module]) -> Projection:
        """Add a skip (source earlier than target) or recurrent (source at or after target)
        projection between existing populations (or from ``"input"``)."""
        tgt = self.population(target)
        proj = Projection(source, target, modules)
        _, shape = chain_footprint(proj.chain, self._shape_of(source))
        if math.prod(shape) != tgt.size:
            raise ValueError(
                f"the projection {source} -> {target} produces {math.prod(shape)} values but "
                f"{target!r} has {tgt.size} neurons"
            )
        self.projections.append(proj)
        self._tables = None
        return proj

    # ------------------------------------------------------------------ structure queries
    @property
    def n_input(self) -> int:
        """The number of input neurons (the product of ``input_shape``)."""
        return math.prod(self.input_shape)

    @property
    def n_neurons(self) -> int:
        """Neurons of all populations plus the input."""
        return self.n_input + sum(p.size for p in self.populations)

    @property
    def output(self) -> Population:
        """The output population: the last one added."""
        if not self.populations:
            raise ValueError("the network has no population yet")
        return self.populations[-1]

    def population(self, name: str) -> Population:
        """The population named ``name`` (``KeyError`` naming the others if none is)."""
        for p in self.populations:
            if p.name == name:
                return p
        names = [p.name for p in self.populations]
        raise KeyError(f"no population named {name!r}; the network has {names}")

    def neuron_model(self) -> NeuronModel:
        """The neuron model of all populations (the engines run one model per network)."""
        models = {p.neuron for p in self.populations}
        if len(models) != 1:
            names = sorted(m.name for m in models)
            raise ValueError(f"the populations mix the neuron models {names}: use one model")
        return models.pop()

    @property
    def current_based(self) -> bool:
        """Whether any neuron has a synaptic current (``tau_syn > 0``)."""
        return bool((self.tau_syn > 0).any())

    def subtract_mask(self) -> torch.Tensor | None:
        """(population neurons,) bool: the neurons that reset by subtraction, or ``None``
        where every population resets to zero."""
        if all(p.reset == "zero" for p in self.populations):
            return None
        return torch.cat(
            [
                torch.full((p.size,), p.reset == "subtract", device=self.tau_m.device)
                for p in self.populations
            ]
        )

    def layer_of(self, name: str) -> int:
        """The layer of population ``name`` (the input's is 0)."""
        return 0 if name == INPUT else self.population(name).layer

    def incoming(self, name: str) -> list[Projection]:
        """The projections into population ``name``."""
        return [p for p in self.projections if p.target == name]

    def is_recurrent(self, proj: Projection) -> bool:
        """Whether ``proj`` runs from a population to itself or to an earlier layer."""
        return self.layer_of(proj.source) >= self.layer_of(proj.target)

    def _shape_of(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == INPUT else self.population(name).shape

    def _offset_of(self, name: str) -> int:
        return 0 if name == INPUT else self.population(name).offset

    def check_ready(self) -> None:
        """Raise ``ValueError``, saying what is missing, unless the network can run."""
        if not self.populations:
            raise ValueError("the network has no population: add one before running it")
        for p in self.populations:
            if not self.incoming(p.name):
                raise ValueError(f"population {p.name!r} has no incoming projection")
            if not p.spiking and any(q.source == p.name for q in self.projections):
                raise ValueError(
                    f"the non-spiking population {p.name!r} cannot have outgoing projections"
                )

    # ------------------------------------------------------------------ parameters as vectors
    def weight_vector(self) -> torch.Tensor:
        """All weighted modules' weights, flattened and concatenated, then a 1 and a 0.

        Entry ``widx`` of :meth:`tables` indexes this vector (differentiable).
        """
        parts = [p.weighted.weight.flatten() for p in self.projections if p.weighted is not None]
        ref = self.tau_m
        dtype = parts[0].dtype if parts else ref.dtype
        device = parts[0].device if parts else ref.device
        tail = torch.tensor([1.0, 0.0], dtype=dtype, device=device)
        return torch.cat(parts + [tail])

    def bias_vector(self) -> torch.Tensor:
        """Constant current per timestep of every neuron (global order, input first)."""
        dtype = self.tau_m.dtype
        parts = [torch.zeros(self.n_input, dtype=dtype, device=self.tau_m.device)]
        for pop in self.populations:
            b = torch.zeros(pop.size, dtype=dtype, device=self.tau_m.device)
            for proj in self.incoming(pop.name):
                w = proj.weighted
                if w is not None and w.bias is not None:
                    zero = torch.zeros(
                        1, *self._shape_of(proj.source), dtype=w.bias.dtype, device=w.bias.device
                    )
                    b = b + proj.apply(zero, bias=True)[0]
            parts.append(b)
        return torch.cat(parts)

    def tables(self) -> Tables:
        """Global synaptic entries, sorted by source neuron (cached until the structure changes)."""
        device = self.tau_m.device
        if self._tables is not None and self._tables.entries_src.device == device:
            return self._tables
        self.check_ready()
        offsets = {}
        off = 0
        for p in self.projections:
            if p.weighted is not None:
                offsets[id(p)] = off
                off += p.weighted.weight.numel()
        one = off
        srcs, dsts, widxs, coefs = [], [], [], []
        for p in self.projections:
            fp, _ = chain_footprint(p.chain, self._shape_of(p.source))
            srcs.append(fp.src + self._offset_of(p.source))
            dsts.append(fp.dst + self._offset_of(p.target))
            widxs.append(np.where(fp.widx >= 0, fp.widx + offsets.get(id(p), 0), one))
            coefs.append(fp.coef)
        src = np.concatenate(srcs)
        dst = np.concatenate(dsts)
        order = np.lexsort((dst, src))
        src, dst = src[order], dst[order]
        widx, coef = np.concatenate(widxs)[order], np.concatenate(coefs)[order]
        n = self.n_neurons
        pairs = np.unique(src * (n + 1) + dst)
        fanout = np.bincount(pairs // (n + 1), minlength=n)
        has_out = np.zeros(n, dtype=bool)
        has_out[src] = True
        dtype = self.tau_m.dtype
        self._tables = Tables(
            n_input=self.n_input,
            n_neurons=n,
            entries_src=torch.as_tensor(src, device=device),
            entries_dst=torch.as_tensor(dst, device=device),
            entries_widx=torch.as_tensor(widx, device=device),
            entries_coef=torch.as_tensor(coef, dtype=dtype, device=device),
            fanout=torch.as_tensor(fanout, device=device),
            has_outgoing=torch.as_tensor(has_out, device=device),
        )
        return self._tables

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        upgrade_state(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):  # keep cached tables on the right device
        self._tables = None
        return super()._apply(fn, *args, **kwargs)

    def extra_repr(self) -> str:
        pops = ", ".join(f"{p.name}{list(p.shape)}" for p in self.populations)
        return f"input{list(self.input_shape)} -> {pops}"


def upgrade_state(state: dict, prefix: str = "") -> dict:
    """A network's ``state_dict`` saved by an earlier version, completed in place: one saved
    before synaptic currents existed has no ``tau_syn`` (its neurons have none, 0)."""
    key = prefix + "tau_syn"
    if key not in state and prefix + "tau_m" in state:
        state[key] = torch.zeros_like(state[prefix + "tau_m"])
    return state


def _per_population(value, n: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} values for {n} populations")
        return list(value)
    return [value] * n


def _per_neuron(value, n: int, what: str, name: str, zero: bool = False) -> torch.Tensor:
    """``value`` (a scalar or one per neuron) as ``n`` finite values > 0 (``>= 0`` where
    ``zero``)."""
    t = torch.as_tensor(value, dtype=torch.get_default_dtype()).detach().clone().flatten()
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{what} of population {name!r} has {t.numel()} values for {n} neurons")
    positive = (t >= 0).all() if zero else (t > 0).all()
    if not torch.isfinite(t).all() or not positive:
        bound = ">= 0" if zero else "> 0"
        raise ValueError(f"{what} of population {name!r} must be finite and {bound}, got {value!r}")
    return t
