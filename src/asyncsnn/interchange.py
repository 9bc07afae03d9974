r"""NIR (Neuromorphic Intermediate Representation) import and export.

:func:`from_nir` turns a NIR graph (or a ``.nir`` file) into a :class:`~asyncsnn.Network`;
:func:`to_nir` writes a network as a NIR graph (save it with ``nir.write``). Needs the ``nir``
package (``pip install "asyncsnn[nir]"``).

**Neurons.** NIR's LIF is continuous: :math:`\tau \dot v = (v_{leak} - v) + r I`, spike when
:math:`v > v_{threshold}`, then :math:`v \leftarrow v_{reset}`. asyncsnn's neuron is discrete:
per timestep :math:`V \leftarrow \beta V`, then :math:`V \leftarrow V + I` for every current,
spike iff :math:`V > \theta`, reset (to 0, or by subtracting :math:`\theta`). A timestep's
input is a current impulse of area :math:`I\,dt` (a spike is an event, not a constant
current), absorbed when it arrives; between arrivals :math:`v` leaks. Both discretizations
therefore give the same input gain and differ only in the leak:

=================  ==============================  ==========================
``discretization``  leak per step :math:`\beta`     input gain :math:`g`
=================  ==============================  ==========================
``"exact"``         :math:`e^{-dt/\tau}`            :math:`r\,dt/\tau`
``"euler"``         :math:`1 - dt/\tau`             :math:`r\,dt/\tau`
=================  ==============================  ==========================

``"euler"`` is forward Euler, :math:`v \leftarrow v + \frac{dt}{\tau}(r I - v)`: how snnTorch,
SpikingJelly and Norse read and write NIR. asyncsnn stores :math:`\tau_m` (seconds) and computes
:math:`e^{-dt/\tau_m}`, so an Euler leak is stored as :math:`\tau_m = -dt/\ln(1 - dt/\tau)`.

* Import folds :math:`g` into the weights (and bias) of every projection into the population
  (``nn.Linear``: per output row; ``nn.Conv2d``: per output channel, so :math:`g` must be the
  same across a channel's positions). Where a projection has no weighted module, or a
  convolution's gain varies inside a channel, :math:`g` goes into the threshold instead
  (:math:`\theta / g`, the same spikes for either reset, see below; spiking neurons with
  :math:`g > 0` only). A gain within ``GAIN_RTOL`` of 1 is taken as exactly 1 (the float32
  rounding of :math:`r = \tau/dt`; snnTorch's importer uses the same tolerance).
* Export writes :math:`r = \tau/dt`, so :math:`g = 1` reproduces asyncsnn's ``V + I``, with
  :math:`\tau = \tau_m` (exact) or :math:`\tau = dt / (1 - e^{-dt/\tau_m})` (Euler). This is
  snnTorch's convention (it writes :math:`r = \tau/dt`); Norse writes :math:`r = 1`
  (gain :math:`dt/\tau`), which import folds into the weights.
* ``IF`` (:math:`\dot v = r I`) has no leak: :math:`\tau_m` = ``NO_LEAK_TAU_M`` (1e30 s, so
  :math:`e^{-dt/\tau_m}` is exactly 1; the engine needs a finite :math:`\tau_m`). Its gain per
  step is :math:`r` whatever ``dt``: Norse, Sinabs and snnTorch all write and read ``r = 1``
  for an IF neuron that adds its input unchanged. Export writes a population whose leak is
  exactly 1 as ``IF`` with ``r = 1``.
* ``LI`` is a non-spiking leaky readout (``spiking=False``), with the gain of ``LIF``; ``I``
  (:math:`\dot v = r I`) is a non-spiking readout without leak, gain :math:`r`, like ``IF``.
* ``CubaLIF`` (:math:`\tau_{syn} \dot I = -I + w_{in} S`,
  :math:`\tau_{mem} \dot v = (v_{leak} - v) + r I`) is asyncsnn's current-based LIF
  (``tau_syn``; per timestep :math:`I \leftarrow \alpha I + W s + b`,
  :math:`V \leftarrow \beta V + I`), ``CubaLI`` its non-spiking readout. Each stage is read
  like ``LIF``: the decays :math:`\alpha` (from ``tau_syn``) and :math:`\beta` (from
  ``tau_mem``) follow the discretization, as in the table; the input reaches :math:`I` with
  the gain :math:`w_{in}\,dt/\tau_{syn}` (an impulse, as above) and each step's :math:`I`
  reaches :math:`V` with the gain :math:`r\,dt/\tau_{mem}` (the current of a step taken as
  an impulse of area :math:`I\,dt`), under both discretizations. The voltage uses the current
  of its own step, as snnTorch's ``Synaptic`` and Norse's importer do. Their product is the
  population's input gain, folded as above (the current asyncsnn reports is NIR's times
  :math:`r\,dt/\tau_{mem}`). Export writes :math:`w_{in} = \tau_{syn}/dt` and
  :math:`r = \tau_{mem}/dt` (gain 1), with NIR's :math:`\tau_{syn}` from :math:`\alpha`
  like :math:`\tau` from :math:`\beta`: snnTorch's convention for ``Synaptic``. A neuron
  without current (``tau_syn = 0``) in a current-based population is written with a current
  that decays to 0 in one step (:math:`\tau_{syn} = dt/1000` exact, :math:`dt` Euler).
* An Euler decay of 0 (``dt == tau``, within ``GAIN_RTOL``) is stored as
  :math:`\tau = dt/1000` (:math:`e^{-1000} = 0`); ``dt > tau`` (a negative decay) cannot be
  represented.
* ``Scale`` nodes are folded into the weighted module of their projection (through flatten,
  and through pooling when constant per channel). ``Affine`` becomes ``nn.Linear`` with a bias,
  ``Linear`` one without; ``Conv2d`` gets a bias iff NIR's (always present) bias is non-zero.

**Reset.** NIR's neurons reset to ``v_reset``; asyncsnn requires ``v_reset = 0``, the reset to
zero. A reset by subtraction (:math:`V \leftarrow V - \theta`) has no NIR parameter: snnTorch
writes ``v_reset = 0`` for every reset mechanism and Norse writes none. asyncsnn's export
records it in the spiking node's ``metadata`` as ``{"reset": "subtract"}`` (:data:`RESET_KEY`;
it survives ``nir.write``/``nir.read``), and import reads it back. For a graph that cannot say
it, ``from_nir(..., reset="subtract")`` (or a mapping from population names) states it, and
:func:`with_reset` writes it into a copy of the graph. Without either, a population resets to
zero. A gain folded into the threshold keeps the spikes of either reset:
:math:`V/g - \theta/g = (V - \theta)/g`.

**Graph.** Every chain of linear nodes (``Affine``, ``Linear``, ``Conv2d``, ``SumPool2d``,
``AvgPool2d``, ``Flatten``, ``Scale``) between two neuron nodes (or from ``Input``) becomes one
projection (at most one weighted node per chain). Populations keep the NIR node names and come
in topological order (ties in the graph's node order, the readout last); an edge that closes a
cycle (found depth-first from ``Input``) is a recurrent projection, any further edge a skip
projection. The population feeding ``Output`` is the readout. Nested ``NIRGraph`` nodes (how
snnTorch writes ``RLeaky``) are inlined. A ``Flatten`` must flatten a whole sample; an ``Input``
shape (or a ``Flatten``'s dimensions) that counts a leading batch dimension, as nirtorch-based
exporters (Norse, Sinabs) write it, is read without it when only that reading fits. Imported
modules remember their NIR node name (``_nir_name``), which :func:`to_nir` reuses.

Whatever asyncsnn cannot run (a non-zero ``v_leak``, a ``v_reset`` other than 0, ``Delay``,
merging edges before a linear node, ...) raises :class:`NIRConversionError` naming the node.

>>> import torch
>>> from torch import nn
>>> net = Network.sequential([nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False)])
>>> graph = to_nir(net, dt=1e-3)
>>> sorted(graph.nodes)
['hidden1', 'hidden1_to_output', 'input', 'input_to_hidden1', 'output', 'output_node']
>>> torch.equal(from_nir(graph, dt=1e-3).threshold, net.threshold)
True
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .connectivity import WEIGHTED, SumPool2d, output_shape
from .dynamics import RESETS, decay_factor
from .network import INPUT, Network

DISCRETIZATIONS = ("exact", "euler")
#: :math:`\tau_m` (seconds) of a neuron without leak (NIR's ``IF`` and ``I``).
NO_LEAK_TAU_M = 1e30
#: Input gains within this relative distance of 1 are taken as exactly 1.
GAIN_RTOL = 1e-5
#: The time step snnTorch assumes whenever it writes or reads NIR, whatever the data's bins:
#: pass it as ``dt`` (with ``discretization="euler"``) for graphs to or from snnTorch.
SNNTORCH_DT = 1e-4
#: The key of a spiking node's ``metadata`` under which asyncsnn records its reset
#: (``"zero"`` or ``"subtract"``); NIR's neurons have only ``v_reset``.
RESET_KEY = "reset"

_NAME_ATTR = "_nir_name"


class NIRConversionError(ValueError):
    """A NIR graph (or a network) uses something the other side cannot express.

    ``node`` names the NIR node (on import) or the population/projection (on export).
    """

    def __init__(self, node: str, reason: str, source: str | None = None) -> None:
        self.node = node
        self.reason = reason
        #: the file the graph was read from (``None`` for a graph given as an object)
        self.source = source
        where = f"{source}: " if source is not None else ""
        super().__init__(f"{where}{node!r}: {reason}")


class ResetAssumedWarning(UserWarning):
    """A NIR graph does not say how its spiking neurons reset, and :func:`from_nir` took the
    reset to zero (``v_reset = 0``); a model trained with a reset by subtraction then runs with
    other dynamics. State the reset (``from_nir(..., reset=...)``, ``asyncsnn import --reset``)
    to silence it."""


# ---------------------------------------------------------------------------------- helpers
def _nir():
    try:
        import nir
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            'NIR import/export needs the nir package: pip install "asyncsnn[nir]"'
        ) from e
    return nir


def _check_args(dt: float, discretization: str) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not math.isfinite(dt):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if dt <= 0:
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    if discretization not in DISCRETIZATIONS:
        raise ValueError(f"discretization must be one of {DISCRETIZATIONS}, got {discretization!r}")
    return float(dt)


def _arr(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _values(x: Any, name: str, what: str) -> np.ndarray:
    """A node's numeric field as a float64 array; strings, objects and NaN or infinite values
    are a :class:`NIRConversionError` naming the node and the field."""
    a = _arr(x)
    if a.dtype.kind not in "biuf":
        raise NIRConversionError(name, f"{what} must be numbers, got {a.dtype} values")
    a = a.astype(np.float64)
    bad = ~np.isfinite(a)
    if bad.any():
        raise NIRConversionError(
            name,
            f"{what} holds {int(bad.sum())} NaN or infinite value(s) of {a.size} (the first at "
            f"index {[int(i) for i in np.unravel_index(int(np.argmax(bad)), a.shape)]})",
        )
    return a


def _pair(v: Any, name: str, what: str) -> tuple[int, int]:
    a = _arr(v).astype(np.int64).ravel()
    if a.size == 1:
        return (int(a[0]), int(a[0]))
    if a.size != 2:
        raise NIRConversionError(name, f"{what} must be one or two integers, got {v!r}")
    return (int(a[0]), int(a[1]))


def _padding(v: Any, name: str) -> tuple[int, int] | str:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.ndarray) and v.dtype.kind in "SUO" and v.size == 1:
        v = v.item()
        v = v.decode() if isinstance(v, bytes) else v
    if isinstance(v, str):
        if v not in ("same", "valid"):
            raise NIRConversionError(name, f"padding must be 'same', 'valid' or integers: {v!r}")
        return v
    return _pair(v, name, "padding")


def _unique(name: str, taken: set[str]) -> str:
    out, i = name, 1
    while out in taken:
        out = f"{name}_{i}"
        i += 1
    taken.add(out)
    return out


# ---------------------------------------------------------------------------------- import
class _PassThrough:
    """The ``Input`` or ``Output`` of an inlined subgraph: passes values on."""


def _is_pass_through(node: Any) -> bool:
    nir = _nir()
    identity = isinstance(node, nir.NIRNode) and type(node).__name__ == "Identity"
    return identity or isinstance(node, _PassThrough)


_NEURON_NAMES = ("LIF", "IF", "LI", "I", "CubaLIF", "CubaLI")
_SPIKING_NAMES = ("LIF", "IF", "CubaLIF")
_LINEAR_NAMES = ("Affine", "Linear", "Conv2d", "SumPool2d", "AvgPool2d", "Flatten", "Scale")
_UNSUPPORTED = {
    "Conv1d": "a 1-D convolution; asyncsnn supports Conv2d",
    "Delay": "a synaptic delay; asyncsnn delivers every spike in its own timestep",
    "Threshold": "a bare threshold without a membrane; asyncsnn needs LIF or IF neurons",
}


@dataclass
class _Proj:
    source: str
    target: str
    path: list[str]
    modules: list[nn.Module] = field(default_factory=list)
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    out_shape: tuple[int, ...] = ()


def _load(graph_or_path):
    nir = _nir()
    if isinstance(graph_or_path, (str, Path)):
        path = Path(graph_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"no NIR file at {path}")
        try:
            return nir.read(str(path), type_check=False)
        except Exception as e:  # h5py's and nir's own errors (nir asserts what it expects)
            why = _why(path, e)
            raise ValueError(f"{path}: not a NIR graph asyncsnn can read ({why})") from None
    if not isinstance(graph_or_path, nir.NIRGraph):
        raise TypeError(
            "from_nir takes a nir.NIRGraph or the path of a .nir file, got "
            f"{type(graph_or_path).__name__}"
        )
    return graph_or_path


def _why(path: Path, error: Exception) -> str:
    """What is wrong with a file ``nir.read`` failed on: an unknown node type or a graph
    without edges where the file shows one, else the error itself."""
    nir = _nir()
    try:
        import h5py

        with h5py.File(path, "r") as f:
            if "node" not in f:
                return "it has no 'node' group: not written by nir.write"
            found: list[str] = []

            def visit(group, where: str) -> None:
                kind = _text(group["type"][()]) if "type" in group else None
                if kind == "NIRGraph":
                    if "edges" not in group:
                        found.append(f"the graph {where or '<top>'!r} has no edges")
                    for key, sub in group.get("nodes", {}).items():
                        visit(sub, f"{where}.{key}" if where else key)
                elif kind is not None and not isinstance(getattr(nir, str(kind), None), type):
                    found.append(f"the node {where!r} has the type {kind!r}, unknown to NIR")
                elif kind in _NEURON_NAMES:
                    shapes = {
                        k: v.shape
                        for k, v in group.items()
                        if isinstance(v, h5py.Dataset) and k != "type" and v.size > 1
                    }
                    if len(set(shapes.values())) > 1:
                        listed = ", ".join(f"{k} {tuple(v)}" for k, v in sorted(shapes.items()))
                        found.append(f"the node {where!r} has fields of unequal shapes: {listed}")

            visit(f["node"], "")
            if found:
                return "; ".join(found)
    except Exception:  # not HDF5 at all: the error says so
        pass
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _inline(graph, prefix: str = "") -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Nodes and edges with nested graphs inlined (their Input/Output become pass-throughs)."""
    nir = _nir()
    nodes: dict[str, Any] = {}
    edges: list[tuple[str, str]] = []
    entry: dict[str, str] = {}  # subgraph name -> its inner input node
    exit_: dict[str, str] = {}
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _inline(node, prefix=f"{full}.")
            ins = [k for k, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [k for k, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise NIRConversionError(
                    full, "a nested graph needs exactly one Input and one Output node"
                )
            for k in ins + outs:
                sub_nodes[f"{full}.{k}"] = _PassThrough()
            entry[full], exit_[full] = f"{full}.{ins[0]}", f"{full}.{outs[0]}"
            nodes.update(sub_nodes)
            edges.extend(sub_edges)
        elif prefix and isinstance(node, (nir.Input, nir.Output)):
            nodes[full] = node  # replaced by the caller
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = f"{prefix}{a}", f"{prefix}{b}"
        for end in (a, b):
            if end not in nodes and end not in entry:
                raise NIRConversionError(end, "an edge names this node but the graph has none")
        edges.append((exit_.get(a, a), entry.get(b, b)))
    return nodes, edges


def _kind(name: str, node: Any) -> str:
    nir = _nir()
    if _is_pass_through(node):
        return "linear"
    if isinstance(node, nir.Input):
        return "input"
    if isinstance(node, nir.Output):
        return "output"
    t = type(node).__name__
    if t in _NEURON_NAMES and isinstance(node, getattr(nir, t)):
        return "neuron"
    if t in _LINEAR_NAMES and isinstance(node, getattr(nir, t)):
        return "linear"
    if t in _UNSUPPORTED:
        raise NIRConversionError(name, f"{t} is {_UNSUPPORTED[t]}")
    supported = ", ".join(("Input", "Output") + _LINEAR_NAMES + _NEURON_NAMES)
    raise NIRConversionError(name, f"asyncsnn cannot run a {t} node (supported: {supported})")


def _classify(nodes: dict[str, Any], edges: list[tuple[str, str]]):
    """Each node's kind; the one Input, the Output and neuron nodes, in graph order.

    Checks that the graph has one Input, at least one neuron and no edge twice.
    """
    kinds = {name: _kind(name, node) for name, node in nodes.items()}
    inputs = [n for n, k in kinds.items() if k == "input"]
    outputs = [n for n, k in kinds.items() if k == "output"]
    neurons = [n for n, k in kinds.items() if k == "neuron"]
    if len(inputs) != 1:
        raise NIRConversionError(
            inputs[1] if inputs else "<graph>",
            f"asyncsnn needs exactly one Input node, the graph has {len(inputs)}",
        )
    if not neurons:
        raise NIRConversionError(
            "<graph>", f"the graph has no neuron node ({', '.join(_NEURON_NAMES)})"
        )
    if len(set(edges)) != len(edges):
        dup = next(e for e in edges if edges.count(e) > 1)
        raise NIRConversionError(dup[0], f"the edge {dup} appears twice")
    return kinds, inputs[0], outputs, neurons


def _adjacency(nodes: dict[str, Any], edges: list[tuple[str, str]], kinds: dict[str, str]):
    """The successors of every node.

    Checks that no edges merge into a linear node, none leads into the Input and none leaves
    the Output.
    """
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        succ[a].append(b)
        pred[b].append(a)
    for name, kind in kinds.items():
        if kind == "linear" and len(pred[name]) > 1:
            raise NIRConversionError(
                name,
                f"{len(pred[name])} edges ({', '.join(pred[name])}) merge into this linear node; "
                "asyncsnn sums currents only at neurons: give each source its own copy",
            )
        if kind == "input" and pred[name]:
            raise NIRConversionError(name, "an edge leads into the Input node")
        if kind == "output" and succ[name]:
            raise NIRConversionError(name, "an edge leaves the Output node")
    return succ


def _chains(
    kinds: dict[str, str],
    succ: dict[str, list[str]],
    inp: str,
    neurons: list[str],
    passthrough: set[str] = frozenset(),
):
    """The projections (chains of linear nodes from the Input or a neuron to a neuron) and
    the populations that feed an Output node (directly, or through the ``passthrough``
    nodes, a nested graph's Output).

    Checks that every linear node is reached and leads somewhere, and that linear nodes form
    no cycle and do not lead into the Output.
    """
    projections: list[_Proj] = []
    readouts: list[str] = []
    visited: set[str] = set()

    def walk(source: str, node: str, path: list[str]) -> None:
        if kinds[node] == "linear" and not succ[node]:
            raise NIRConversionError(node, "this node leads nowhere (no outgoing edge)")
        for nxt in succ[node]:
            kind = kinds[nxt]
            if kind == "neuron":
                projections.append(_Proj(source, nxt, list(path)))
            elif kind == "linear":
                if nxt in path:
                    raise NIRConversionError(nxt, "a cycle of linear nodes without a neuron")
                visited.add(nxt)
                walk(source, nxt, path + [nxt])
            elif kind == "output":
                if any(n not in passthrough for n in path):
                    raise NIRConversionError(
                        path[-1],
                        "linear nodes lead into the Output node; asyncsnn reads out a "
                        "population (spikes, or the membrane of LI/I) directly",
                    )
                if source == inp:
                    raise NIRConversionError(nxt, "the Input leads straight to the Output")
                readouts.append(source)

    for source in [inp] + neurons:
        walk(source, source, [])
    for name, kind in kinds.items():
        if kind == "linear" and name not in visited:
            raise NIRConversionError(name, "this node is not reachable from the Input or a neuron")
    return projections, readouts


def _single_readout(readouts: list[str], outputs: list[str]) -> str | None:
    """The one population that feeds Output nodes (``None`` if none does)."""
    if len(set(readouts)) > 1:
        raise NIRConversionError(
            outputs[-1],
            f"several populations ({sorted(set(readouts))}) feed Output nodes; asyncsnn has "
            "one readout population (every population's spikes are recorded anyway): keep one "
            "Output node (nir's type check adds one to every leaf node)",
        )
    return readouts[0] if readouts else None


def _back_edges(inp: str, neurons: list[str], projections: list[_Proj]) -> set[tuple[str, str]]:
    """The recurrent ``(source, target)`` pairs: depth-first from the Input, the edges back to
    a node on the stack. Checks that every neuron node is reachable from the Input."""
    nsucc: dict[str, list[str]] = {n: [] for n in [inp] + neurons}
    for p in projections:
        if p.target not in nsucc[p.source]:
            nsucc[p.source].append(p.target)
    state: dict[str, int] = {inp: 1}
    back: set[tuple[str, str]] = set()
    stack = [(inp, iter(nsucc[inp]))]
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            state[node] = 2
            stack.pop()
        elif state.get(nxt) == 1:
            back.add((node, nxt))
        elif nxt not in state:
            state[nxt] = 1
            stack.append((nxt, iter(nsucc[nxt])))
    for n in neurons:
        if n not in state:
            raise NIRConversionError(n, "this neuron node is not reachable from the Input")
    return back


def _population_order(
    nodes: dict[str, Any],
    inp: str,
    neurons: list[str],
    projections: list[_Proj],
    back: set[tuple[str, str]],
    readout: str | None,
) -> list[str]:
    """The neuron nodes in topological order of the forward projections (ties in the graph's
    node order, the readout last). Checks that the readout can come last."""
    position = {n: i for i, n in enumerate(nodes)}
    indeg = dict.fromkeys(neurons, 0)
    fwd: dict[str, list[str]] = {n: [] for n in neurons}
    for p in projections:
        if p.source != inp and (p.source, p.target) not in back:
            fwd[p.source].append(p.target)
            indeg[p.target] += 1
    order: list[str] = []
    ready = [n for n in neurons if indeg[n] == 0]
    while ready:
        ready.sort(key=lambda n: (n == readout, position[n]))
        n = ready.pop(0)
        order.append(n)
        for t in fwd[n]:
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    readout = readout or order[-1]
    if order[-1] != readout:
        raise NIRConversionError(
            readout,
            f"the readout must come last in network order, but {order[-1]!r} depends on it "
            "without leading to the Output",
        )
    return order


def _topology(nodes: dict[str, Any], edges: list[tuple[str, str]]):
    """Classify nodes; enumerate projections; order populations; find the readout."""
    kinds, inp, outputs, neurons = _classify(nodes, edges)
    succ = _adjacency(nodes, edges, kinds)
    passthrough = {n for n, node in nodes.items() if _is_pass_through(node)}
    projections, readouts = _chains(kinds, succ, inp, neurons, passthrough)
    readout = _single_readout(readouts, outputs)
    back = _back_edges(inp, neurons, projections)
    order = _population_order(nodes, inp, neurons, projections, back, readout)
    return inp, order, projections, back


def _flatten_module(name: str, node: Any, in_shape: tuple[int, ...]) -> nn.Module:
    start, end = int(_arr(node.start_dim)), int(_arr(node.end_dim))
    readings = [(start, end)]
    if start >= 1:  # the same dimensions counted with a leading batch dimension
        readings.append((start - 1, end - 1 if end > 0 else end))
    nd = len(in_shape)
    for s, e in readings:
        s, e = (s + nd if s < 0 else s), (e + nd if e < 0 else e)
        if s == 0 and e == nd - 1:
            return nn.Flatten()
    raise NIRConversionError(
        name,
        f"flattens dimensions {start}..{end} of a sample of shape {in_shape}; asyncsnn only "
        "flattens whole samples",
    )


def _module(name: str, node: Any, in_shape: tuple[int, ...]) -> nn.Module | None:
    """The torch module of one linear node (``None`` for a pass-through)."""
    nir = _nir()
    dtype = torch.get_default_dtype()
    if _is_pass_through(node):
        return None
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = _values(node.weight, name, "weight")
        if w.ndim != 2:
            raise NIRConversionError(name, f"weight must be a matrix, got shape {w.shape}")
        bias = _values(node.bias, name, "bias") if isinstance(node, nir.Affine) else None
        if bias is not None and bias.size != w.shape[0]:
            raise NIRConversionError(
                name, f"bias has {bias.size} values for a weight of {w.shape[0]} rows"
            )
        m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(w.astype(np.float64), dtype=dtype))
            if bias is not None:
                m.bias.copy_(torch.as_tensor(bias.astype(np.float64), dtype=dtype).flatten())
        return m
    if isinstance(node, nir.Conv2d):
        w = _values(node.weight, name, "weight")
        if w.ndim != 4:
            raise NIRConversionError(name, f"Conv2d weight must be 4-D, got shape {w.shape}")
        groups = int(_arr(node.groups))
        b = _values(node.bias, name, "bias") if node.bias is not None else np.zeros(w.shape[0])
        if b.size not in (1, w.shape[0]):
            raise NIRConversionError(
                name, f"bias has {b.size} values for {w.shape[0]} output channels"
            )
        has_bias = bool(np.any(b != 0))
        m = nn.Conv2d(
            w.shape[1] * groups,
            w.shape[0],
            kernel_size=tuple(w.shape[2:]),
            stride=_pair(node.stride, name, "stride"),
            padding=_padding(node.padding, name),
            dilation=_pair(node.dilation, name, "dilation"),
            groups=groups,
            bias=has_bias,
        )
        with torch.no_grad():
            m.weight.copy_(torch.as_tensor(w.astype(np.float64), dtype=dtype))
            if has_bias:
                m.bias.copy_(torch.as_tensor(b.astype(np.float64), dtype=dtype).flatten())
        return m
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k = _pair(node.kernel_size, name, "kernel_size")
        s = _pair(node.stride, name, "stride")
        p = _pair(node.padding, name, "padding")
        if isinstance(node, nir.SumPool2d):
            return SumPool2d(k, s, p)
        return nn.AvgPool2d(k, s, p)
    if isinstance(node, nir.Flatten):
        return _flatten_module(name, node, in_shape)
    raise AssertionError(type(node))  # pragma: no cover - _kind filters the rest


def _per_channel(s: np.ndarray, name: str, what: str) -> np.ndarray:
    """The per-channel values of a (C, H, W) factor that must be constant inside channels."""
    c = s.reshape(s.shape[0], -1)
    if not np.all(c == c[:, :1]):
        raise NIRConversionError(
            name, f"{what} varies inside a channel, which a convolution or pooling cannot carry"
        )
    return c[:, 0]


def _move(s: np.ndarray, module: nn.Module, src: tuple, dst: tuple, name: str) -> np.ndarray:
    """Carry an elementwise factor ``s`` (shape ``src``) across a parameter-free module."""
    if isinstance(module, (nn.Flatten, nn.Identity)):
        return s.reshape(dst)
    per = _per_channel(s.reshape(src), name, "the scale")  # pooling: commutes per channel
    return np.broadcast_to(per.reshape(-1, 1, 1), dst).copy()


def _scale_weighted(m: nn.Module, s: np.ndarray, pre: bool, name: str) -> None:
    """Multiply a weighted module's input (``pre``) or output by the elementwise ``s``."""
    w = m.weight.detach().double().numpy()
    b = m.bias.detach().double().numpy() if m.bias is not None else None
    if isinstance(m, nn.Linear):
        if pre:
            w = w * s.reshape(1, -1)
        else:
            w = w * s.reshape(-1, 1)
            b = None if b is None else b * s.reshape(-1)
    else:
        c = _per_channel(s, name, "the scale")
        if pre:
            cout, cin_g = w.shape[0], w.shape[1]
            cout_g = cout // m.groups
            idx = (np.arange(cout)[:, None] // cout_g) * cin_g + np.arange(cin_g)[None, :]
            w = w * c[idx][:, :, None, None]
        else:
            w = w * c.reshape(-1, 1, 1, 1)
            b = None if b is None else b * c
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(w, dtype=m.weight.dtype))
        if b is not None:
            m.bias.copy_(torch.as_tensor(b, dtype=m.bias.dtype))


def _build(proj: _Proj, nodes: dict[str, Any], in_shape: tuple[int, ...]) -> None:
    """Modules of a projection, with its Scale nodes folded into its weighted module."""
    nir = _nir()
    items: list[tuple[str, Any, tuple, tuple]] = []  # (node name, module or scale, in, out)
    shape = tuple(in_shape)
    for name in proj.path:
        node = nodes[name]
        if isinstance(node, nir.Scale):
            s = _values(node.scale, name, "scale")
            if s.size == 1:
                s = np.full(shape, float(s.ravel()[0]))
            elif s.size != math.prod(shape):
                raise NIRConversionError(
                    name, f"scale has {s.size} values for an input of shape {shape}"
                )
            items.append((name, s.reshape(shape), shape, shape))
            continue
        m = _module(name, node, shape)
        if m is None:
            continue
        try:
            out = output_shape(m, shape)
        except ValueError as e:
            raise NIRConversionError(name, f"does not fit an input of shape {shape}: {e}") from e
        setattr(m, _NAME_ATTR, name)
        items.append((name, m, shape, out))
        shape = out
    weighted = [i for i, it in enumerate(items) if isinstance(it[1], WEIGHTED)]
    if len(weighted) > 1:
        raise NIRConversionError(
            items[weighted[1]][0],
            f"a second weighted node after {items[weighted[0]][0]!r} with no neuron between "
            "them; asyncsnn allows one weighted module per projection",
        )
    for i, (name, s, _, _) in enumerate(items):
        if not isinstance(s, np.ndarray) or np.all(s == 1):
            continue
        if not weighted:
            raise NIRConversionError(
                name, "cannot fold this Scale: its chain has no Affine, Linear or Conv2d"
            )
        w = weighted[0]
        if i < w:  # carry forward to the weighted module's input
            for _, m, src, dst in items[i + 1 : w]:
                if isinstance(m, nn.Module):
                    s = _move(s, m, src, dst, name)
            _scale_weighted(items[w][1], s, True, name)
        else:  # carry backward to its output
            for _, m, src, dst in reversed(items[w + 1 : i]):
                if isinstance(m, nn.Module):
                    s = _move(s, m, dst, src, name)
            _scale_weighted(items[w][1], s, False, name)
    kept = [(m, (src, dst)) for _, m, src, dst in items if isinstance(m, nn.Module)]
    proj.modules = [m for m, _ in kept] or [nn.Identity()]
    proj.shapes = [sh for _, sh in kept] or [(shape, shape)]
    proj.out_shape = shape


def _fold_gain(proj: _Proj, gain: np.ndarray, name: str) -> bool:
    """Fold a target neuron's input gain into the projection's weights; ``False`` if it can't."""
    w = next((i for i, m in enumerate(proj.modules) if isinstance(m, WEIGHTED)), None)
    if w is None:
        return False
    g = gain.reshape(proj.out_shape)
    try:
        for k in range(len(proj.modules) - 1, w, -1):
            src, dst = proj.shapes[k]
            g = _move(g, proj.modules[k], dst, src, name)
        _scale_weighted(proj.modules[w], g, False, name)
    except NIRConversionError:
        return False
    return True


@dataclass
class _Neurons:
    tau_m: np.ndarray
    threshold: np.ndarray
    gain: np.ndarray
    spiking: bool
    #: per neuron, for a current-based node (``CubaLIF``, ``CubaLI``); else ``None``
    tau_syn: np.ndarray | None = None
    #: the reset the node's metadata records (``None``: it records none)
    reset: str | None = None


def _text(value: Any) -> Any:
    """A metadata value as written (``bytes`` and 0-d arrays, as HDF5 returns them, unwrapped)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    return value.decode() if isinstance(value, bytes) else value


def _recorded_reset(name: str, node: Any) -> str | None:
    """The reset a spiking node's metadata records under :data:`RESET_KEY`, if any."""
    meta = getattr(node, "metadata", None)
    if not isinstance(meta, dict) or RESET_KEY not in meta:
        return None
    value = _text(meta[RESET_KEY])
    if value not in RESETS:
        raise NIRConversionError(
            name,
            f"its metadata records {RESET_KEY}={value!r}; asyncsnn knows {list(RESETS)} "
            "(state the reset with from_nir(..., reset=...))",
        )
    return value


def _discrete_tau(
    name: str, field_: str, tau: np.ndarray, dt: float, disc: str
) -> tuple[np.ndarray, np.ndarray]:
    """The time constant asyncsnn stores for a NIR decay (membrane or synaptic current) and
    ``dt/tau``: ``tau`` itself (exact, :math:`e^{-dt/\\tau}`), or the one for which
    :math:`e^{-dt/\\tau'} = 1 - dt/\\tau` (Euler)."""
    if not np.all(np.isfinite(tau) & (tau > 0)):
        raise NIRConversionError(name, f"{field_} must be finite and > 0 (seconds)")
    x = dt / tau
    if disc == "exact":
        return tau.copy(), x
    x = np.where(np.abs(x - 1) <= GAIN_RTOL, 1.0, x)  # the float32 rounding of tau = dt
    if np.any(x > 1):
        raise NIRConversionError(
            name,
            f"{field_} = {tau.min():g} s < dt = {dt:g} s: the Euler decay 1 - dt/{field_} is "
            "negative, which asyncsnn cannot represent",
        )
    with np.errstate(divide="ignore"):
        stored = -dt / np.log1p(-x)
    stored = np.where(x == 1, dt * 1e-3, stored)  # a decay of 0: exp(-1000) == 0
    return np.where(x == 0, NO_LEAK_TAU_M, stored), x


def _neurons(name: str, node: Any, shape: tuple[int, ...], dt: float, disc: str) -> _Neurons:
    nir = _nir()
    n = math.prod(shape)

    def per(field_: str, default: float | None = None) -> np.ndarray:
        v = getattr(node, field_, None)
        if v is None:
            if default is None:
                raise NIRConversionError(name, f"{field_} is missing")
            return np.full(shape, default)
        a = _arr(v)
        if a.dtype.kind not in "biuf":
            raise NIRConversionError(name, f"{field_} must be numbers, got {a.dtype} values")
        a = a.astype(np.float64)
        if a.size == 1:
            return np.full(shape, float(a.ravel()[0]))
        if a.size != n:
            raise NIRConversionError(
                name, f"{field_} has {a.size} values for a population of shape {shape}"
            )
        return a.reshape(shape)

    spiking = isinstance(node, (nir.LIF, nir.IF, nir.CubaLIF))
    cuba = isinstance(node, (nir.CubaLIF, nir.CubaLI))
    r = per("r")
    if not np.all(np.isfinite(r)):
        raise NIRConversionError(name, "r must be finite")
    tau_syn = None
    if isinstance(node, (nir.LIF, nir.LI)) or cuba:
        v_leak = per("v_leak", 0.0)
        if np.any(v_leak != 0):
            raise NIRConversionError(
                name,
                f"v_leak = {v_leak.ravel()[np.argmax(v_leak != 0)]:g} is not 0; asyncsnn's "
                "neurons leak towards 0",
            )
        field_ = "tau_mem" if cuba else "tau"
        tau_m, x = _discrete_tau(name, field_, per(field_), dt, disc)
        gain = r * x
        if cuba:  # the synaptic current's decay, and the gain of its input, w_in dt/tau_syn
            w_in = per("w_in", 1.0)
            if not np.all(np.isfinite(w_in)):
                raise NIRConversionError(name, "w_in must be finite")
            tau_syn, x_syn = _discrete_tau(name, "tau_syn", per("tau_syn"), dt, disc)
            gain = gain * w_in * x_syn
    else:  # IF and I: no leak; gain r per step
        tau_m = np.full(shape, NO_LEAK_TAU_M)
        gain = r
    tau_m = np.where(np.isfinite(tau_m) & (tau_m < NO_LEAK_TAU_M), tau_m, NO_LEAK_TAU_M)
    if tau_syn is not None:
        tau_syn = np.minimum(tau_syn, NO_LEAK_TAU_M)
    gain = np.where(np.abs(gain - 1) <= GAIN_RTOL, 1.0, gain)
    reset = None
    if spiking:
        v_reset = per("v_reset", 0.0)
        if np.any(v_reset != 0):
            raise NIRConversionError(
                name,
                f"v_reset = {v_reset.ravel()[np.argmax(v_reset != 0)]:g} is not 0; asyncsnn "
                "resets to 0 or by subtracting the threshold",
            )
        theta = per("v_threshold")
        if not np.all(np.isfinite(theta) & (theta > 0)):
            raise NIRConversionError(name, "v_threshold must be finite and > 0")
        reset = _recorded_reset(name, node)
    else:
        theta = np.ones(shape)
    return _Neurons(tau_m, theta, gain, spiking, tau_syn, reset)


def _check_metadata(graph, dt: float, discretization: str) -> None:
    """Warn where the graph's metadata records another ``dt`` or discretization."""
    meta = getattr(graph, "metadata", None) or {}
    for key, value in (("dt", dt), ("discretization", discretization)):
        if key in meta:
            written = meta[key]
            written = written.decode() if isinstance(written, bytes) else written
            if isinstance(written, np.ndarray):
                written = written.item()
            if written != value and not (
                key == "dt" and math.isclose(float(written), value, rel_tol=1e-9)
            ):
                warnings.warn(
                    f"the graph was written with {key}={written!r} but is read with "
                    f"{key}={value!r}; its dynamics change accordingly",
                    stacklevel=3,  # the caller of from_nir
                )


def _input_shape(nodes: dict[str, Any], inp: str, projections: list[_Proj]) -> tuple[int, ...]:
    """The shape of a sample at the Input node, and the projections from it built.

    The Input's shape is read as written or, where only that fits the projections from it,
    without a leading batch dimension of 1.
    """
    in_node = nodes[inp]
    raw = in_node.input_type.get("input") if in_node.input_type else None
    if raw is None:
        raise NIRConversionError(inp, "the Input node has no shape")
    shape = tuple(int(v) for v in _arr(raw).ravel())
    candidates = [shape] + ([shape[1:]] if len(shape) > 1 and shape[0] == 1 else [])
    from_input = [p for p in projections if p.source == inp]
    error: NIRConversionError | None = None
    for cand in candidates:
        try:
            for p in from_input:
                _build(p, nodes, cand)
        except NIRConversionError as e:
            error = error or e
            continue
        return cand
    assert error is not None
    raise error


@dataclass
class _Populations:
    """Per population (in network order): its primary projection, shape and neurons."""

    primary: dict[str, _Proj] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params: dict[str, _Neurons] = field(default_factory=dict)


def _populations(
    nodes: dict[str, Any],
    inp: str,
    input_shape: tuple[int, ...],
    order: list[str],
    projections: list[_Proj],
    back: set[tuple[str, str]],
    dt: float,
    discretization: str,
) -> _Populations:
    """Each population's primary projection (its first forward one from the Input or an
    earlier population, which sets its shape) built, and its neuron parameters read.

    Checks that only the last population is a non-spiking readout.
    """
    pops = _Populations(shapes={inp: input_shape})
    rank = {n: i for i, n in enumerate(order)}
    for name in order:
        p = next(
            p
            for p in projections
            if p.target == name
            and (p.source == inp or (p.source in pops.shapes and rank[p.source] < rank[name]))
            and (p.source, p.target) not in back
        )
        if p.source != inp:
            _build(p, nodes, pops.shapes[p.source])
        pops.shapes[name] = p.out_shape
        pops.primary[name] = p
        pops.params[name] = _neurons(name, nodes[name], p.out_shape, dt, discretization)
        if not pops.params[name].spiking and name != order[-1]:
            raise NIRConversionError(
                name,
                f"{type(nodes[name]).__name__} is a non-spiking readout, but it is not the "
                "last population",
            )
    return pops


def _build_others(
    nodes: dict[str, Any], inp: str, projections: list[_Proj], pops: _Populations
) -> None:
    """Build the projections that are not a population's primary one (recurrent and skip
    projections, further ones from the Input); each must fit its target population."""
    for p in projections:
        if p is not pops.primary[p.target]:
            if p.source != inp:
                _build(p, nodes, pops.shapes[p.source])
            if math.prod(p.out_shape) != math.prod(pops.shapes[p.target]):
                raise NIRConversionError(
                    p.path[-1] if p.path else p.source,
                    f"the projection {p.source} -> {p.target} produces {p.out_shape} values "
                    f"for a population of shape {pops.shapes[p.target]}",
                )


def _fold_gains(order: list[str], projections: list[_Proj], pops: _Populations) -> None:
    """Fold each population's input gain into its incoming weights, or else (spiking
    neurons with a positive gain) into its threshold."""
    for name in order:
        prm = pops.params[name]
        if np.all(prm.gain == 1):
            continue
        incoming = [p for p in projections if p.target == name]
        snapshot = [copy.deepcopy(p.modules) for p in incoming]
        ok = all([_fold_gain(p, prm.gain, name) for p in incoming])
        if not ok:
            for p, mods in zip(incoming, snapshot, strict=True):
                p.modules = mods
            if not prm.spiking or np.any(prm.gain <= 0):
                raise NIRConversionError(
                    name,
                    "its input gain (r dt/tau for LIF/LI, r for IF/I, "
                    "w_in dt/tau_syn r dt/tau_mem for CubaLIF/CubaLI) is not 1 and cannot be "
                    "folded into the incoming weights (a projection without a weighted module, "
                    "or a convolution whose gain varies inside a channel)",
                )
            prm.threshold = prm.threshold / prm.gain


def _resets(order: list[str], pops: _Populations, reset) -> dict[str, str]:
    """Each population's reset: as ``reset`` states it (one for every spiking population, or
    a mapping from population names), else as its node's metadata records it, else
    ``"zero"`` (what ``v_reset = 0`` says). Checks ``reset``."""
    if reset is None:
        stated: dict[str, str] = {}
    elif isinstance(reset, str):
        if reset not in RESETS:
            raise ValueError(f"reset must be one of {list(RESETS)} (or a mapping), got {reset!r}")
        stated = {n: reset for n in order if pops.params[n].spiking}
    elif isinstance(reset, Mapping):
        stated = dict(reset)
        for n, value in stated.items():
            if n not in pops.params:
                raise ValueError(f"reset names {n!r}, which is not a population; there are {order}")
            if not pops.params[n].spiking:
                raise ValueError(f"reset names {n!r}, a non-spiking readout, which never resets")
            if value not in RESETS:
                raise ValueError(f"reset of {n!r} must be one of {list(RESETS)}, got {value!r}")
    else:
        raise TypeError(
            f"reset must be None, one of {list(RESETS)} or a mapping, got {type(reset).__name__}"
        )
    return {n: stated.get(n) or pops.params[n].reset or "zero" for n in order}


def _warn_assumed_resets(graph, order: list[str], pops: _Populations, reset) -> None:
    """Warn (:class:`ResetAssumedWarning`) where a spiking population resets to zero only
    because nothing said otherwise: neither ``reset`` nor its node's metadata, in a graph that
    asyncsnn did not write (asyncsnn's export records every reset by subtraction)."""
    meta = getattr(graph, "metadata", None) or {}
    if _text(meta.get("generator")) == "asyncsnn":
        return
    stated = set(order) if isinstance(reset, str) else set(reset or {})
    assumed = [
        n
        for n in order
        if pops.params[n].spiking and n not in stated and pops.params[n].reset is None
    ]
    if assumed:
        warnings.warn(
            f"the graph does not say how its spiking neurons reset (NIR has no field for a "
            f"reset by subtraction): {', '.join(assumed)} reset to zero; if the model was "
            "trained with a reset by subtraction (snnTorch's default), state it: "
            "--reset subtract (from_nir(..., reset='subtract'))",
            ResetAssumedWarning,
            stacklevel=4,
        )


def _assemble(
    net: Network,
    inp: str,
    order: list[str],
    projections: list[_Proj],
    pops: _Populations,
    resets: dict[str, str],
) -> None:
    """Add the populations (with their primary projections) to ``net``, then connect the
    other projections."""
    for name in order:
        p, prm = pops.primary[name], pops.params[name]
        net.add_population(
            name,
            p.modules,
            source=INPUT if p.source == inp else p.source,
            tau_m=torch.as_tensor(prm.tau_m.ravel()),
            threshold=torch.as_tensor(prm.threshold.ravel()),
            spiking=prm.spiking,
            tau_syn=None if prm.tau_syn is None else torch.as_tensor(prm.tau_syn.ravel()),
            reset=resets[name],
        )
    others = [p for p in projections if p is not pops.primary[p.target]]
    for p in others:
        net.connect(INPUT if p.source == inp else p.source, p.target, p.modules)


def from_nir(
    graph_or_path,
    dt: float,
    discretization: str = "exact",
    reset: str | Mapping[str, str] | None = None,
) -> Network:
    """A :class:`~asyncsnn.Network` from a NIR graph or ``.nir`` file.

    Args:
        graph_or_path: a ``nir.NIRGraph``, or the path of a file written by ``nir.write``.
        dt: timestep length in seconds; run the network with the same ``dt``.
        discretization: how NIR's continuous neurons become per-step decays: ``"exact"``
            (:math:`e^{-dt/\\tau}`) or ``"euler"`` (:math:`1 - dt/\\tau`, as snnTorch,
            SpikingJelly and Norse read and write NIR). See the module docstring.
        reset: what a spike does to the membrane, which NIR's ``v_reset`` cannot say for a
            reset by subtraction: ``"zero"`` or ``"subtract"`` for every spiking population,
            or a mapping from population names to either. ``None`` (default): what the graph
            says, i.e. the reset a node's metadata records (asyncsnn's export records
            ``"subtract"``), else ``"zero"``.

    Raises:
        NIRConversionError: a node or a topology asyncsnn cannot run, or a field that is not
            a finite number (the node is named, and the file where one was read).
        ValueError: ``reset`` is not a reset, or names no spiking population; a file that nir
            cannot read (the file and why).

    Warns:
        ResetAssumedWarning: a spiking population resets to zero only because neither
            ``reset`` nor the graph says otherwise.

    >>> import nir, numpy as np
    >>> g = nir.NIRGraph.from_list(
    ...     nir.Input(np.array([3])),
    ...     nir.Linear(np.ones((2, 3), dtype=np.float32)),
    ...     nir.LIF(tau=np.full(2, 0.01), r=np.full(2, 10.0), v_leak=np.zeros(2),
    ...             v_threshold=np.full(2, 0.5)),
    ... )
    >>> net = from_nir(g, dt=1e-3, discretization="euler")
    >>> net.output.name, round(float(torch.exp(-1e-3 / net.tau_m[0])), 4)
    ('lif', 0.9)
    """
    dt = _check_args(dt, discretization)
    graph = _load(graph_or_path)
    if not isinstance(graph_or_path, (str, Path)):
        return _from_graph(graph, dt, discretization, reset)
    try:
        return _from_graph(graph, dt, discretization, reset, source=str(graph_or_path))
    except NIRConversionError as e:
        raise NIRConversionError(e.node, e.reason, source=str(graph_or_path)) from None


def _from_graph(graph, dt: float, discretization: str, reset, source: str | None = None) -> Network:
    """:func:`from_nir` of a graph read; a field of an unexpected kind in a graph read from a
    file (``source``) is a :class:`NIRConversionError`, not a traceback."""
    try:
        return _convert(graph, dt, discretization, reset)
    except (TypeError, AttributeError, AssertionError, KeyError, IndexError) as e:
        if source is None:
            raise
        text = str(e).strip().splitlines()
        why = f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
        raise NIRConversionError("<graph>", f"a field of an unexpected kind ({why})") from None


def _convert(graph, dt: float, discretization: str, reset) -> Network:
    _check_metadata(graph, dt, discretization)
    nodes, edges = _inline(graph)
    inp, order, projections, back = _topology(nodes, edges)
    first_edge = {e: i for i, e in reversed(list(enumerate(edges)))}
    projections.sort(key=lambda p: first_edge[(p.source, p.path[0] if p.path else p.target)])
    input_shape = _input_shape(nodes, inp, projections)
    net = Network(input_shape)
    pops = _populations(nodes, inp, input_shape, order, projections, back, dt, discretization)
    resets = _resets(order, pops, reset)
    _warn_assumed_resets(graph, order, pops, reset)
    _build_others(nodes, inp, projections, pops)
    # fold each population's input gain into its incoming weights (or its threshold)
    _fold_gains(order, projections, pops)
    _assemble(net, inp, order, projections, pops, resets)
    return net


# ---------------------------------------------------------------------------------- export
def _module_node(m: nn.Module, in_shape: tuple[int, ...], where: str):
    nir = _nir()
    if isinstance(m, nn.Linear):
        w = m.weight.detach().cpu().numpy()
        if m.bias is None:
            return nir.Linear(weight=w)
        return nir.Affine(weight=w, bias=m.bias.detach().cpu().numpy())
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros":
            raise NIRConversionError(where, f"{m}: only padding_mode='zeros' exists in NIR")
        w = m.weight.detach().cpu().numpy()
        b = (
            m.bias.detach().cpu().numpy()
            if m.bias is not None
            else np.zeros(w.shape[0], dtype=w.dtype)
        )
        return nir.Conv2d(
            input_shape=tuple(int(s) for s in in_shape[1:]),
            weight=w,
            stride=tuple(m.stride),
            padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
            dilation=tuple(m.dilation),
            groups=int(m.groups),
            bias=b,
        )
    if isinstance(m, SumPool2d):
        return nir.SumPool2d(
            kernel_size=np.array(m.kernel_size),
            stride=np.array(m.stride),
            padding=np.array(m.padding),
        )
    if isinstance(m, nn.AvgPool2d):
        k = _pair(m.kernel_size, where, "kernel_size")
        s = _pair(m.stride if m.stride is not None else m.kernel_size, where, "stride")
        p = _pair(m.padding, where, "padding")
        if m.ceil_mode or m.divisor_override is not None or (not m.count_include_pad and any(p)):
            raise NIRConversionError(
                where,
                f"{m}: NIR's AvgPool2d has no ceil_mode, divisor_override or "
                "count_include_pad=False with padding",
            )
        return nir.AvgPool2d(kernel_size=np.array(k), stride=np.array(s), padding=np.array(p))
    if isinstance(m, nn.Flatten):
        return nir.Flatten(input_type={"input": np.array(in_shape)}, start_dim=0, end_dim=-1)
    raise NIRConversionError(where, f"no NIR node for {type(m).__name__}")  # pragma: no cover


def _nir_tau(tau: np.ndarray, dt: float, disc: str) -> np.ndarray:
    """NIR's time constant (float64) for asyncsnn's ``tau`` (seconds): ``tau`` (exact), or
    :math:`dt / (1 - e^{-dt/\\tau})` (Euler), for which :math:`1 - dt/\\tau_{NIR}` is
    asyncsnn's decay. A decay of exactly 1 keeps ``tau``."""
    if disc == "exact":
        return tau
    decay = np.exp(-dt / tau)
    with np.errstate(divide="ignore"):
        return np.where(decay < 1, dt / (1 - decay), tau)


def _neuron_node(net: Network, pop, dt: float, disc: str):
    nir = _nir()
    start = pop.offset - net.n_input
    tau_m = net.tau_m[start : start + pop.size]
    tau_syn = net.tau_syn[start : start + pop.size]
    dtype = tau_m.dtype
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    no_leak = bool((decay_factor(dt, tau_m) == 1).all())
    cuba = bool((tau_syn > 0).any())
    theta = net.threshold[start : start + pop.size].detach().cpu().numpy().reshape(pop.shape)
    theta = theta.astype(np_dtype)
    zeros = np.zeros(pop.shape, dtype=np_dtype)
    meta = {RESET_KEY: pop.reset} if pop.spiking and pop.reset != "zero" else {}
    if no_leak and not cuba:
        ones = np.ones(pop.shape, dtype=np_dtype)
        if pop.spiking:
            return nir.IF(r=ones, v_threshold=theta, v_reset=zeros, metadata=meta)
        return nir.I(r=ones)
    tm = tau_m.detach().cpu().double().numpy().reshape(pop.shape)
    tau = _nir_tau(tm, dt, disc)
    r = (tau / dt).astype(np_dtype)
    tau = tau.astype(np_dtype)
    if cuba:
        ts = tau_syn.detach().cpu().double().numpy().reshape(pop.shape)
        # a neuron without current (tau_syn = 0) has a current that decays to 0 in a step
        ts = np.where(ts > 0, ts, dt * 1e-3)
        ts = _nir_tau(ts, dt, disc)
        w_in = (ts / dt).astype(np_dtype)
        ts = ts.astype(np_dtype)
        if pop.spiking:
            return nir.CubaLIF(
                tau_syn=ts,
                tau_mem=tau,
                r=r,
                v_leak=zeros,
                v_threshold=theta,
                v_reset=zeros.copy(),
                w_in=w_in,
                metadata=meta,
            )
        return nir.CubaLI(tau_syn=ts, tau_mem=tau, r=r, v_leak=zeros, w_in=w_in)
    if pop.spiking:
        return nir.LIF(
            tau=tau, r=r, v_leak=zeros, v_threshold=theta, v_reset=zeros.copy(), metadata=meta
        )
    return nir.LI(tau=tau, r=r, v_leak=zeros)


def to_nir(network: Network, dt: float, discretization: str = "exact"):
    """The NIR graph of ``network`` run with timestep ``dt`` (seconds).

    Populations become ``LIF`` (``IF`` where the leak per step is exactly 1), a non-spiking
    readout ``LI`` (or ``I``), and current-based ones (``tau_syn > 0``) ``CubaLIF`` (or
    ``CubaLI``), named after the population; each projection's modules become a chain of
    ``Affine``/``Linear``/``Conv2d``/``SumPool2d``/``AvgPool2d``/``Flatten`` nodes.
    ``r = tau/dt`` (and ``w_in = tau_syn/dt``) makes the graph reproduce asyncsnn's dynamics
    under ``discretization`` (see the module docstring); a population that resets by
    subtraction has ``{"reset": "subtract"}`` in its node's metadata (:data:`RESET_KEY`).
    Save it with ``nir.write(path, graph)``. For snnTorch's importer use ``dt=SNNTORCH_DT``
    and ``discretization="euler"``.

    Raises:
        NIRConversionError: a module NIR cannot express (named by its projection).
    """
    nir = _nir()
    dt = _check_args(dt, discretization)
    if not isinstance(network, Network):
        raise TypeError(f"network must be an asyncsnn.Network, got {type(network).__name__}")
    network.check_ready()
    taken = {p.name for p in network.populations}
    input_name = _unique("input", taken)
    nodes: dict[str, Any] = {input_name: nir.Input(input_type=np.array(network.input_shape))}
    for pop in network.populations:
        nodes[pop.name] = _neuron_node(network, pop, dt, discretization)
    edges: list[tuple[str, str]] = []
    for proj in network.projections:
        source = input_name if proj.source == INPUT else proj.source
        where = f"{proj.source} -> {proj.target}"
        modules = [m for m in proj.chain if not isinstance(m, nn.Identity)]
        shape = (
            network.input_shape if proj.source == INPUT else (network.population(proj.source).shape)
        )
        prev = source
        base = f"{proj.source}_to_{proj.target}"
        for j, m in enumerate(modules):
            name = getattr(m, _NAME_ATTR, None)
            if not isinstance(name, str) or name in taken:
                name = base if len(modules) == 1 else f"{base}_{j}"
            name = _unique(name, taken)
            nodes[name] = _module_node(m, tuple(shape), where)
            edges.append((prev, name))
            shape = output_shape(m, tuple(shape))
            prev = name
        if (prev, proj.target) in edges:
            raise NIRConversionError(
                where, "a second parameter-free projection between the same populations"
            )
        edges.append((prev, proj.target))
    out = network.output
    output_name = _unique("output" if "output" not in taken else "output_node", taken)
    nodes[output_name] = nir.Output(output_type=np.array(out.shape))
    edges.append((out.name, output_name))
    metadata = {"generator": "asyncsnn", "dt": dt, "discretization": discretization}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def with_reset(graph_or_path, reset: str | Mapping[str, str]):
    """A copy of a NIR graph that records the reset of its spiking neuron nodes in their
    ``metadata`` (:data:`RESET_KEY`), so that :func:`from_nir` reads it without being told.

    For a graph written by a library that cannot say "reset by subtraction" in NIR (snnTorch,
    Norse): ``nir.write(path, with_reset(graph, "subtract"))``. ``reset`` is ``"zero"`` or
    ``"subtract"`` for every spiking node (``LIF``, ``IF``, ``CubaLIF``), or a mapping from
    the node names that :func:`from_nir` gives the populations (``"subgraph.node"`` inside a
    nested graph) to either.

    Raises:
        ValueError: ``reset`` is not a reset, or names no spiking node of the graph.
    """
    nir = _nir()
    graph = copy.deepcopy(_load(graph_or_path))
    spiking: dict[str, Any] = {}

    def collect(g, prefix: str) -> None:
        for name, node in g.nodes.items():
            if isinstance(node, nir.NIRGraph):
                collect(node, f"{prefix}{name}.")
            elif type(node).__name__ in _SPIKING_NAMES:
                spiking[f"{prefix}{name}"] = node

    collect(graph, "")
    if isinstance(reset, str):
        wanted = dict.fromkeys(spiking, reset)
    elif isinstance(reset, Mapping):
        wanted = dict(reset)
        unknown = sorted(set(wanted) - set(spiking))
        if unknown:
            raise ValueError(
                f"reset names {unknown}, which are not spiking neuron nodes; there are "
                f"{sorted(spiking)}"
            )
    else:
        raise TypeError(f"reset must be one of {list(RESETS)} or a mapping, got {reset!r}")
    for name, value in wanted.items():
        if value not in RESETS:
            raise ValueError(f"reset of {name!r} must be one of {list(RESETS)}, got {value!r}")
        node = spiking[name]
        node.metadata = {**(getattr(node, "metadata", None) or {}), RESET_KEY: value}
    return graph
