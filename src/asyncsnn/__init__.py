"""asyncsnn: spiking neural networks run and trained without layer synchronization."""

from .connectivity import SumPool2d
from .execution import RunResult, run
from .hooks import (
    Hook,
    InputSpikeDropout,
    MaxForwardSteps,
    NetworkSpikeDropout,
    OutputTrace,
    StepContext,
    StopOnOutputSpike,
)
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
from .surrogate import ArcTan, FastSigmoid

__version__ = "0.1.0"

__all__ = [
    "ArcTan",
    "FIFO",
    "FastSigmoid",
    "Hook",
    "InputSpikeDropout",
    "Layered",
    "MaxForwardSteps",
    "Momentum",
    "Network",
    "NetworkSpikeDropout",
    "OutputTrace",
    "Population",
    "Projection",
    "QueueView",
    "Random",
    "RunResult",
    "Scheduler",
    "StepContext",
    "StopOnOutputSpike",
    "SumPool2d",
    "available_schedulers",
    "register_scheduler",
    "run",
    "sample_seeds",
]
