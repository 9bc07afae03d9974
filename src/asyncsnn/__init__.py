"""asyncsnn: spiking neural networks run and trained without layer synchronization."""

import os as _os

# PyTorch's OpenMP threads spin while they wait by default; on a small or shared machine
# that makes the many small operations of a forward step many times slower. Passive waiting
# changes no result; it only takes effect when asyncsnn is imported before torch, and a value
# the user set wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._program import exit_interrupted as _exit_interrupted
from ._program import running_as_program as _running_as_program

try:  # the program says one line where Ctrl-C comes while torch and numba load
    from .connectivity import SumPool2d
    from .execution import RunResult, RunSettings, run
    from .hooks import (
        Hook,
        InputSpikeDropout,
        MaxForwardSteps,
        NetworkSpikeDropout,
        OutputTrace,
        SpikeEvents,
        StepContext,
        StopOnOutputSpike,
    )
    from .interchange import NIRConversionError, from_nir, to_nir
    from .network import Network, Population, Projection
    from .rng import sample_seeds
    from .scheduling import (
        FIFO,
        Layered,
        Momentum,
        QueueView,
        Random,
        Scheduler,
        available_schedulers,
        register_scheduler,
    )
    from .spikelog import SpikeLog, SpikeLogError, load_spikes, save_spikes
    from .surrogate import ArcTan, FastSigmoid
except KeyboardInterrupt:
    if not _running_as_program():
        raise
    _exit_interrupted()

__version__ = "0.1.0"

__all__ = [
    "ArcTan",
    "FIFO",
    "FastSigmoid",
    "Hook",
    "InputSpikeDropout",
    "Layered",
    "MaxForwardSteps",
    "NIRConversionError",
    "Momentum",
    "Network",
    "NetworkSpikeDropout",
    "OutputTrace",
    "Population",
    "Projection",
    "QueueView",
    "Random",
    "RunResult",
    "RunSettings",
    "Scheduler",
    "SpikeEvents",
    "SpikeLog",
    "SpikeLogError",
    "StepContext",
    "StopOnOutputSpike",
    "SumPool2d",
    "available_schedulers",
    "from_nir",
    "load_spikes",
    "register_scheduler",
    "run",
    "sample_seeds",
    "save_spikes",
    "to_nir",
]
