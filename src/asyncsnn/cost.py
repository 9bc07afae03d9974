"""Hardware cost model: energy and latency of a run from its own event counts (docs/cost.md).

Per sample, under a :class:`Profile`:

- energy (pJ) = ``synops * e_synop_pj + spikes * e_spike_pj + neuron_updates * e_neuron_pj``,
  where ``synops`` and ``spikes`` are :class:`~asyncsnn.RunResult`'s counts and
  ``neuron_updates`` follows the profile's ``update_rule``: ``"timestep"``, populations'
  neurons x timesteps (a time-stepped chip updates every neuron once per timestep; both
  executions leak every neuron once per timestep, docs/semantics.md sections 3 and 5), the
  same for every execution; or ``"event"``, the run's own count
  (:attr:`~asyncsnn.RunResult.event_updates`: the neurons that received a non-zero current,
  once per forward step in asynchronous execution, once per layer pass in layered
  execution);
- time (ns) = ``forward_steps * t + spikes * t_spike_ns``, with ``t = t_step_ns`` for
  asynchronous execution and ``t = t_barrier_ns`` for layered execution, whose forward steps
  are its spike-sending populations each timestep, so layered time is a barrier per layer
  per timestep;
- time to decision: the same formula on the decision latency
  (:func:`asyncsnn.metrics.decision_latency`: forward steps and network spikes until the
  prediction is correct for good).

Constants a profile leaves unknown are NaN (latency) or 0 (an energy term the source does not
give); the built-in profiles' sources are in their ``source`` and in docs/cost.md.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "PROFILES",
    "UPDATE_RULES",
    "Profile",
    "ann_energy_pj",
    "energy_pj",
    "get_profile",
    "load_profile",
    "neuron_updates",
    "sample_cost",
    "time_ns",
]

NAN = math.nan

#: The largest constant a profile may give (pJ or ns): a millijoule per operation or a second
#: per step is no chip's, and the products of larger ones with a run's counts overflow.
MAX_CONSTANT = 1e9

#: Which neuron updates a chip pays for: ``"timestep"``, every neuron every timestep (a
#: time-stepped chip); ``"event"``, the neurons that received input, per forward step (the
#: engines' count, :attr:`asyncsnn.RunResult.event_updates`).
UPDATE_RULES = ("timestep", "event")

#: The constants a profile may leave unknown (NaN): the latencies and the ANN's MAC.
_MAY_BE_UNKNOWN = ("e_mac_pj", "t_step_ns", "t_barrier_ns")


@dataclass(frozen=True)
class Profile:
    """A chip's constants: energies in picojoules, times in nanoseconds.

    ``e_synop_pj``: one synaptic operation; ``e_spike_pj``: one spike sent (routed);
    ``e_neuron_pj``: one neuron update; ``e_mac_pj``: one multiply-accumulate (for comparing
    with a dense ANN, :func:`ann_energy_pj`); ``t_step_ns``: one forward step of asynchronous
    execution; ``t_barrier_ns``: one layer's barrier of layered execution; ``t_spike_ns``:
    routing one spike. NaN: not known for this chip. ``update_rule``: which neuron updates
    the chip pays for (:data:`UPDATE_RULES`).
    """

    name: str
    e_synop_pj: float
    e_spike_pj: float = 0.0
    e_neuron_pj: float = 0.0
    e_mac_pj: float = NAN
    t_step_ns: float = NAN
    t_barrier_ns: float = NAN
    t_spike_ns: float = 0.0
    source: str = ""
    update_rule: str = "timestep"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a cost profile's name must be a non-empty string, got {self.name!r}")
        if self.update_rule not in UPDATE_RULES:
            raise ValueError(
                f"cost profile {self.name!r}: update_rule must be one of "
                f"{', '.join(map(repr, UPDATE_RULES))}, got {self.update_rule!r}"
            )
        for f in fields(self):
            if f.name in ("name", "source", "update_rule"):
                continue
            v = getattr(self, f.name)
            if f.name in _MAY_BE_UNKNOWN and isinstance(v, float) and math.isnan(v):
                continue  # not known for this chip (the default)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not 0 <= v <= MAX_CONSTANT  # NaN fails too
            ):
                unknown = (
                    " (or NaN where not known: leave the key out)"
                    if f.name in _MAY_BE_UNKNOWN
                    else ""
                )
                raise ValueError(
                    f"cost profile {self.name!r}: {f.name} must be a number >= 0, got {v!r} "
                    f"(finite, at most {MAX_CONSTANT:g}{unknown})"
                )

    def step_time_ns(self, execution: str) -> float:
        """The time of one forward step: ``t_step_ns`` (async) or ``t_barrier_ns`` (layered)."""
        if execution == "async":
            return self.t_step_ns
        if execution == "layered":
            return self.t_barrier_ns
        raise ValueError(f"an execution is 'layered' or 'async', got {execution!r}")


#: The built-in profiles (docs/cost.md gives each constant's source, or says it is assumed).
PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            "loihi",
            e_synop_pj=23.6,
            e_spike_pj=1.7,
            e_neuron_pj=81.0,
            t_step_ns=113.0,
            t_barrier_ns=113.0,
            t_spike_ns=2.1,
            source="Davies et al. 2018, IEEE Micro 38(1), 'Loihi: a neuromorphic manycore "
            "processor with on-chip learning', Table 2 (pre-silicon SDF and SPICE simulation "
            "at 0.75 V): 23.6 pJ per synaptic spike operation (the minimum), 1.7 pJ "
            "within-tile spike energy (each tile hop adds 3.0-4.0 pJ, which depends on the "
            "placement and is not counted), 81 pJ per active neuron update (52 pJ inactive), "
            "2.1 ns within-tile spike latency, 113 ns mesh-wide barrier synchronisation "
            "(1 tile; 465 ns for 32) per layer barrier. Assumed: a forward step of "
            "asynchronous execution takes as long as one barrier (the chip has no published "
            "time for such a step). Update rule 'timestep': the chip synchronises by "
            "timesteps and the table prices active and inactive neuron updates, so every "
            "neuron is updated every timestep (each charged as active).",
        ),
        Profile(
            "spinnaker2",
            e_synop_pj=450.0,
            e_neuron_pj=2190.0,
            source="Hoeppner et al. 2019, IEEE TCAS-I 66(8), 'Dynamic power management for "
            "neuromorphic many-core systems' (SpiNNaker 2 test chip, 28 nm SLP, 4 processing "
            "elements): 450 pJ per synaptic operation, 2.19 nJ per neuron update. No spike or "
            "timing figure used: latency is not known (NaN). Update rule 'timestep': "
            "assumed, not taken from the paper.",
        ),
        Profile(
            "seneca",
            e_synop_pj=2.8,
            source="Tang et al. 2023, Frontiers in Neuroscience, 'SENeCA: building a fully "
            "digital neuromorphic processor': about 2.8 pJ per synaptic operation. Synaptic "
            "operations only; latency not known (NaN). Update rule 'timestep': assumed (no "
            "neuron-update energy, so the rule changes no figure).",
        ),
        Profile(
            "horowitz45",
            e_synop_pj=0.9,
            e_mac_pj=4.6,
            source="Horowitz 2014, ISSCC, 'Computing's energy problem': 45 nm, 32-bit float "
            "add 0.9 pJ (one accumulate per synaptic operation), multiply-accumulate "
            "4.6 pJ (3.7 pJ multiply + 0.9 pJ add) for a dense ANN. Arithmetic only: no "
            "memory, routing or timing. Update rule 'timestep': assumed (no neuron-update "
            "energy, so the rule changes no figure).",
        ),
    ]
}

_KEYS = {f.name for f in fields(Profile)}


def load_profile(path: str | Path) -> Profile:
    """A profile from a TOML file: top-level keys ``name`` and ``e_synop_pj`` (required),
    ``e_spike_pj``, ``e_neuron_pj``, ``e_mac_pj``, ``t_step_ns``, ``t_barrier_ns``,
    ``t_spike_ns`` (numbers >= 0), ``source`` (a string) and ``update_rule``
    (``"timestep"``, the default, or ``"event"``). Raises ``ValueError`` naming the bad key
    or value."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (a cost profile is TOML)") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    for key in _MAY_BE_UNKNOWN:
        value = data.get(key)
        if isinstance(value, float) and math.isnan(value):
            raise ValueError(
                f"{path}: {key} is nan; leave the key out where the chip's constant is not known"
            )
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ValueError(
            f"{path}: unknown cost profile key(s) {', '.join(unknown)}; "
            f"the keys are {', '.join(sorted(_KEYS))}"
        )
    for key in ("name", "e_synop_pj"):
        if key not in data:
            raise ValueError(f"{path}: the cost profile needs the key {key!r}")
    for key in ("source", "update_rule"):
        if key in data and not isinstance(data[key], str):
            raise ValueError(f"{path}: {key} must be a string, got {data[key]!r}")
    try:
        return Profile(**data)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def get_profile(spec: str | Path | Profile) -> Profile:
    """A built-in profile by name (:data:`PROFILES`), or one from a ``.toml`` file."""
    if isinstance(spec, Profile):
        return spec
    if isinstance(spec, Path) or str(spec).endswith(".toml"):
        return load_profile(spec)
    if spec not in PROFILES:
        raise ValueError(
            f"unknown cost profile {spec!r}: one of {', '.join(PROFILES)} or a FILE.toml"
        )
    return PROFILES[spec]


def energy_pj(synops, spikes, updates, profile: Profile):
    """Energy in pJ of ``synops`` synaptic operations, ``spikes`` spikes and ``updates``
    neuron updates (numbers or tensors)."""
    return synops * profile.e_synop_pj + spikes * profile.e_spike_pj + updates * profile.e_neuron_pj


def time_ns(steps, spikes, profile: Profile, execution: str):
    """Time in ns of ``steps`` forward steps (layered: layer barriers) routing ``spikes``."""
    return steps * profile.step_time_ns(execution) + spikes * profile.t_spike_ns


def neuron_updates(result, rule: str = "timestep") -> torch.Tensor:
    """(batch,) float64 neuron updates of a run under ``rule`` (:data:`UPDATE_RULES`):
    ``"timestep"``, the populations' neurons x timesteps; ``"event"``, the run's
    ``event_updates`` summed over its timesteps (a ``ValueError`` where the engine did not
    count them)."""
    if rule == "event":
        updates = getattr(result, "event_updates", None)
        if updates is None:
            raise ValueError(
                "the update rule 'event' reads RunResult.event_updates, which this run does not "
                f"have (engine {getattr(result, 'engine', '') or 'unknown'!r}; the Triton "
                "kernel does not count a non-spiking readout's updates)"
            )
        return updates.sum(0).double()
    if rule != "timestep":
        raise ValueError(
            f"an update rule is one of {', '.join(map(repr, UPDATE_RULES))}, got {rule!r}"
        )
    T, B, n = result.spikes.shape
    return torch.full((B,), float(n * T), dtype=torch.float64, device=result.spikes.device)


def sample_cost(result, execution: str, profile: Profile, latency: dict | None = None) -> dict:
    """Per-sample cost of one run, tensors of shape (batch,): ``energy_nj``, ``time_us`` and,
    given ``latency`` (:func:`asyncsnn.metrics.decision_latency`'s dict), ``latency_time_us``
    (NaN where the sample does not settle)."""
    spikes = result.spikes.detach().sum((0, 2)).double()
    synops = result.synops.detach().sum(0).double()
    steps = result.forward_steps.sum(0).double()
    out = {
        "energy_nj": energy_pj(synops, spikes, neuron_updates(result, profile.update_rule), profile)
        / 1e3,
        "time_us": time_ns(steps, spikes, profile, execution) / 1e3,
    }
    if latency is not None:
        out["latency_time_us"] = (
            time_ns(
                latency["latency_steps"].double(),
                latency["latency_spikes"].double(),
                profile,
                execution,
            )
            / 1e3
        )
    return out


def ann_energy_pj(network, profile: Profile) -> float:
    """Energy in pJ of one dense pass of the same network as an ANN: every synapse one
    multiply-accumulate (``e_mac_pj``), once per sample."""
    return float(network.tables().fanout.double().sum()) * profile.e_mac_pj
