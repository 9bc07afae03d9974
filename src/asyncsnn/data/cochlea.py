"""Audio to cochlear spikes as the Spiking Heidelberg Digits were made, vectorised.

The Spiking Heidelberg Digits (Cramer et al., 2020) were made by the cochlea model of the
``lauscher`` package (``Wave2Spike``, 700 channels). :func:`cochlea_events` runs the same model,
stage by stage and with the same constants (:class:`CochleaParameters`), in a fraction of the
time:

1. **Level.** The recording is scaled to an RMS of 0.3, and its first and second halves are
   faded in and out by the two halves of a Hann window.
2. **Basilar membrane** (Sieroka, Dosch and Rupp, 2006: a hydrodynamic long-wave model). Each
   channel is a place ``x`` on the membrane, ``n_channels`` places evenly spaced from the base
   (``x = 0``, high frequencies) to the apex (``x = 3.5``, low frequencies); its velocity is the
   recording filtered by the model's transfer function ``V(omega, x)``. As in lauscher, the
   filter is applied to the one-sided spectrum (``N // 2 + 1`` bins, taken as frequencies
   evenly spaced from 1 Hz to ``sample_rate // 2``) and the real part of its inverse transform
   is the velocity, sampled at ``sample_rate // 2``: every later stage runs at half the
   recording's rate. ``V`` is tabulated once per channel count on a logarithmic frequency grid
   (100 points per e-fold, cubic splines of log-magnitude and unwrapped phase; relative error of
   the velocity below 1e-5) instead of being evaluated, with its Hankel functions, at every
   bin of every recording.
3. **Inner hair cell** (Meddis, 1986 and 1988): a transmitter-reservoir model, integrated with
   lauscher's explicit steps (one per sample, values clipped at zero), turns the velocity into
   a firing probability per sample.
4. **Auditory nerve fibres and bushy cell.** Each channel has 40 fibres that fire
   independently with that probability and then stay silent for ``tau_refrac`` (1 ms); they
   converge on one leaky integrate-and-fire bushy cell (exponential synaptic current
   ``tau_syn`` = 0.5 ms, membrane ``tau_mem`` = 1 ms, threshold 1, total weight 13,000 s^-1,
   refractory 1 ms) whose spikes are the output. Fibres are exchangeable, so the number that
   fire in a sample is drawn at once, binomially among those not silent, which gives the
   same distribution as lauscher's 40 separate trains.

The randomness is a :func:`numpy.random.default_rng` stream of the seed: the same recording and
seed give the same spikes. ``encoder="lauscher"`` runs lauscher itself instead (where it is
installed), with numpy's global random state seeded for the call and restored after it.

>>> import numpy as np
>>> t = np.arange(4000) / 8000
>>> events = cochlea_events(np.sin(2 * np.pi * 500 * t), 8000, seed=0)
>>> events.dtype.names, bool(np.all(np.diff(events["t"]) >= 0))
(('t', 'x'), True)
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from numba import njit

from .events import AUDIO_EVENT_DTYPE

__all__ = [
    "BushyCellParameters",
    "CochleaParameters",
    "HairCellParameters",
    "MembraneParameters",
    "cochlea_channel_frequencies",
    "cochlea_events",
]

ENCODERS = ("builtin", "lauscher")
MIN_SAMPLE_RATE = 1000.0
"""Lowest accepted sample rate (Hz): the spiking stages run at half of it."""

_POINTS_PER_E_FOLD = 100  # density of the transfer-function table on a log-frequency axis
_TABLE_MIN_TOP = 32_000.0  # the table reaches at least this frequency (Hz)
MAX_SAMPLE_RATE = 384_000.0
"""Highest accepted sample rate (Hz): the highest of common audio formats."""
MAX_SAMPLES = 4_800_000
"""Longest accepted recording, in samples: 10 minutes at 8 kHz, 100 s at 48 kHz. The model
filters the whole recording's spectrum at once (as lauscher does), so its memory grows with the
recording; at this length its peak is measured by ``benchmarks/bench_audio_memory.py``
(docs/cochlea.md). Split a longer recording into parts."""

_CHANNEL_BLOCK = 128  # channels simulated together, at most
_BLOCK_BYTES = 64 * 2**20  # the arrays of one block of channels stay below this, where they can
_BYTES_PER_BIN = 56  # a channel's arrays per frequency bin (filter, inverse FFT, probability...)


def _check_positive(obj: object) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
            raise ValueError(
                f"{type(obj).__name__}.{f.name} must be a positive number, got {value!r}"
            )


@dataclass(frozen=True)
class MembraneParameters:
    """The basilar membrane of Sieroka et al. (2006), in the model's units (lauscher's names in
    brackets).

    Attributes:
        stiffness: stiffness at the base (``c0``); it falls as ``exp(-stiffness_decay * x)``.
        stiffness_offset: constant subtracted from the stiffness (``a``).
        stiffness_decay: rate of the stiffness's fall along the membrane (``alpha``).
        length: place of the last channel; channels are evenly spaced on ``[0, length]``
            (``c``).
        fluid_density: density of the cochlear fluid (``rho``).
        damping: damping coefficient (``de``); the damping is ``damping * sqrt(stiffness *
            mass)``, falling as ``exp(-stiffness_decay * x / 2)``.
        height: height of the fluid channel (``h``).
        mass: mass per unit area of the membrane (``m``).
    """

    stiffness: float = 1e9
    stiffness_offset: float = 3500.0
    stiffness_decay: float = 3.0
    length: float = 3.5
    fluid_density: float = 1.0
    damping: float = 0.15
    height: float = 0.1
    mass: float = 0.05

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True)
class HairCellParameters:
    """The inner hair cell of Meddis (1986, 1988); rates in 1/s (lauscher's names in brackets).

    Attributes:
        permeability_offset: input offset of the membrane permeability (``A``).
        permeability_scale: input scale of the permeability's saturation (``B``).
        max_permeability: permeability at saturation, 1/s (``g``).
        replenish_rate: refill of the free transmitter pool from the factory, 1/s (``y``).
        loss_rate: loss from the cleft, 1/s (``l``).
        reuptake_rate: reuptake from the cleft into the cell, 1/s (``r``).
        reprocess_rate: return from reprocessing to the free pool, 1/s (``x``).
        firing_gain: firing probability per second per unit of cleft transmitter (``h``).
        max_transmitter: capacity of the free pool (``M``).
    """

    permeability_offset: float = 5.0
    permeability_scale: float = 300.0
    max_permeability: float = 2000.0
    replenish_rate: float = 5.05
    loss_rate: float = 2500.0
    reuptake_rate: float = 6580.0
    reprocess_rate: float = 66.3
    firing_gain: float = 50_000.0
    max_transmitter: float = 1.0

    def __post_init__(self) -> None:
        _check_positive(self)


@dataclass(frozen=True)
class BushyCellParameters:
    """Auditory nerve fibres converging on a LIF bushy cell; times in seconds.

    Attributes:
        n_fibres: fibres per channel (lauscher's ``n_convergence``).
        tau_mem: membrane time constant of the bushy cell (s).
        tau_syn: synaptic time constant (s).
        tau_refrac: dead time of a fibre and refractory period of the bushy cell (s).
        weight: total synaptic weight of the fibres (1/s; each fibre has ``weight /
            n_fibres``); the threshold is 1.
    """

    n_fibres: int = 40
    tau_mem: float = 1e-3
    tau_syn: float = 5e-4
    tau_refrac: float = 1e-3
    weight: float = 13e3

    def __post_init__(self) -> None:
        _check_positive(self)
        if int(self.n_fibres) != self.n_fibres:
            raise ValueError(
                f"BushyCellParameters.n_fibres must be an integer, got {self.n_fibres}"
            )


@dataclass(frozen=True)
class CochleaParameters:
    """All the constants of the model; the defaults are lauscher 1.0.1's ``Wave2Spike``.

    Attributes:
        rms_level: RMS the recording is scaled to before the cochlea.
        membrane: the basilar membrane.
        hair_cell: the inner hair cell.
        bushy: the fibres and the bushy cell.
    """

    rms_level: float = 0.3
    membrane: MembraneParameters = field(default_factory=MembraneParameters)
    hair_cell: HairCellParameters = field(default_factory=HairCellParameters)
    bushy: BushyCellParameters = field(default_factory=BushyCellParameters)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rms_level) and self.rms_level > 0):
            raise ValueError(f"CochleaParameters.rms_level must be positive, got {self.rms_level}")


# ----------------------------------------------------------------------------- checks of input
def _check_audio(samples: npt.ArrayLike, sample_rate: float) -> tuple[np.ndarray, float]:
    """The samples as a 1-D float64 array and the rate as a float, or a ValueError naming what
    is wrong."""
    if not isinstance(sample_rate, numbers.Real) or not math.isfinite(sample_rate):
        raise ValueError(f"sample_rate must be a finite number of Hz, got {sample_rate!r}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate {sample_rate} Hz is below 1 kHz: give the rate in Hz (e.g. 8000); the "
            f"cochlea needs at least {MIN_SAMPLE_RATE:.0f} Hz"
        )
    if sample_rate > MAX_SAMPLE_RATE:
        raise ValueError(
            f"sample_rate {sample_rate:g} Hz is above {MAX_SAMPLE_RATE:g} Hz, the highest of "
            "common audio formats: a wrong header? resample the audio (e.g. to 16 kHz)"
        )
    x = np.asarray(samples)
    if x.ndim != 1:
        hint = " (stereo or multi-channel?): mix down to mono, e.g. samples.mean(axis=1)"
        raise ValueError(f"samples must be 1-D mono audio, got shape {x.shape}{hint}")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"samples must be real numbers, got dtype {x.dtype}")
    if x.size < 2:
        raise ValueError(f"samples hold {x.size} value(s): an empty recording cannot be encoded")
    if x.size > MAX_SAMPLES:
        raise ValueError(
            f"the recording has {x.size:,} samples ({x.size / sample_rate:.0f} s at "
            f"{sample_rate:g} Hz); the cochlea encodes at most {MAX_SAMPLES:,} (10 minutes at "
            "8 kHz, 100 s at 48 kHz), since its memory grows with the recording: split it into "
            "shorter parts"
        )
    x = x.astype(np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"samples contain {int(bad.sum())} NaN or infinite values (the first at index "
            f"{int(np.argmax(bad))}): clean or drop them before encoding"
        )
    if not np.any(x):
        raise ValueError("samples are silent (all zero): there is nothing to encode")
    return x, float(sample_rate)


def _check_channels(n_channels: int) -> int:
    if isinstance(n_channels, bool) or not isinstance(n_channels, numbers.Integral):
        raise ValueError(f"n_channels must be an integer, got {n_channels!r}")
    if not 1 <= n_channels <= np.iinfo(np.int16).max:
        raise ValueError(f"n_channels must be in 1..32767, got {n_channels}")
    return int(n_channels)


# ----------------------------------------------------------------------------- level stage
def _level(x: np.ndarray, rms_level: float) -> np.ndarray:
    """Scale to the RMS level, then fade each half in and out by half a Hann window."""
    y = x / np.max(np.abs(x))  # first to a peak of 1: no overflow or underflow in the RMS
    y *= rms_level / np.sqrt(np.mean(np.square(y)))
    half = y.size // 2
    ramp = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(half) / (2 * half - 1))
    y[:half] *= ramp
    y[y.size - half :] *= ramp[::-1]
    return y


# ----------------------------------------------------------------------------- basilar membrane
def _places(n_channels: int, membrane: MembraneParameters) -> np.ndarray:
    """Place of each channel on the membrane, base (0) to apex (``membrane.length``)."""
    return np.linspace(0.0, membrane.length, n_channels)


def _transfer_function(omega: np.ndarray, places: np.ndarray, mp: MembraneParameters):
    """Membrane velocity per unit of stimulus, ``V(omega, x)``: shape ``(places, omega)``.

    With the stiffness ``s(x) = c0 exp(-alpha x) - a``, the damping ``r(x) = de sqrt(c0 m)
    exp(-alpha x / 2)`` and the impedance ``xi = s - m omega^2 - i omega r``, the local wave
    number is ``k = omega sqrt(rho / (h xi))``; the phase integral ``Phi(omega, x)`` of ``k``
    along the membrane has a closed form (a logarithm), the pressure is ``sqrt(Phi / k)
    H0(Phi)`` (Hankel function of the first kind), and the velocity is ``2 omega / xi`` times
    the pressure relative to the base's times the stapes's impedance ``Z(omega)`` (Bessel
    functions of the first and second kind).
    """
    from scipy import special

    w = np.asarray(omega, dtype=np.float64)[None, :]
    x = np.asarray(places, dtype=np.float64)[:, None]
    c0, a, alpha, h, m = mp.stiffness, mp.stiffness_offset, mp.stiffness_decay, mp.height, mp.mass
    r0 = mp.damping * np.sqrt(c0 * m)
    root_k = np.sqrt(a + m * w**2)

    def impedance(at):
        return c0 * np.exp(-alpha * at) - a - m * w**2 - 1j * w * r0 * np.exp(-alpha * at / 2)

    def log_term(xi, at):
        return -2.0 * np.sqrt(xi) + 2j * root_k - w * r0 * np.exp(-alpha * at / 2) / root_k

    xi_base, xi = impedance(0.0), impedance(x)
    k_base = w * np.sqrt(mp.fluid_density / (h * xi_base))
    k = w * np.sqrt(mp.fluid_density / (h * xi))
    ratio = np.exp(-alpha * x / 2) * log_term(xi_base, 0.0) / log_term(xi, x)
    phi = (2.0 / alpha) * (k_base - 1j * w / (np.sqrt(h) * root_k) * np.log(ratio))
    phi_base = (2.0 / alpha) * k_base
    pressure = np.sqrt(phi / k) * special.hankel1(0, phi)
    pressure_base = np.sqrt(phi_base / k_base) * special.hankel1(0, phi_base)
    u = (2.0 * w / alpha) * np.sqrt(2.0 / (h * c0))
    stapes = np.sqrt(2.0 * c0 / h) * (1j * special.j0(u) + special.y0(u))
    stapes = stapes / (special.j1(u) - 1j * special.y1(u))
    return 2.0 * w / xi * (pressure / pressure_base) * stapes


class _Table(NamedTuple):
    """``V`` of every channel as cubic splines in ``log f`` (f in Hz) of its log-magnitude and
    its unwrapped phase: ``coef[channel, interval]`` holds the 4 terms (cubic first) of the
    log-magnitude, then the 4 of the phase."""

    log_f: np.ndarray
    coef: np.ndarray


def _table_top(sample_rate: float, mp: MembraneParameters) -> float:
    """Highest frequency the table must hold: the recording's band and well past the base's
    resonance."""
    base = np.sqrt((mp.stiffness - mp.stiffness_offset) / mp.mass) / (2 * np.pi)
    return float(max(_TABLE_MIN_TOP, 1.5 * base, sample_rate // 2))


@functools.lru_cache(maxsize=2)
def _transfer_table(n_channels: int, top: float, mp: MembraneParameters) -> _Table:
    from scipy.interpolate import CubicSpline

    n = int(np.ceil(_POINTS_PER_E_FOLD * np.log(top))) + 1
    log_f = np.linspace(0.0, np.log(top), n)
    v = _transfer_function(2 * np.pi * np.exp(log_f), _places(n_channels, mp), mp)
    log_mag = np.log(np.maximum(np.abs(v), 1e-300))
    phase = np.unwrap(np.angle(v), axis=1)
    spline = CubicSpline(log_f, np.stack([log_mag, phase]), axis=2)  # c: (4, n - 1, 2, ch)
    coef = spline.c.transpose(3, 1, 2, 0).reshape(n_channels, n - 1, 8)
    return _Table(log_f, np.ascontiguousarray(coef))


@njit(cache=True, nogil=True)
def _filter(coef: np.ndarray, log_f: np.ndarray, freqs: np.ndarray, spectrum: np.ndarray):
    """``V(f, channel) * spectrum(f)`` at ``freqs`` (Hz, ascending) for every channel, ``V``
    from the table."""
    n_channels = coef.shape[0]
    last = log_f.size - 2
    index = np.empty(freqs.size, dtype=np.int64)
    offset = np.empty(freqs.size)
    i = 0
    for b in range(freqs.size):
        q = np.log(freqs[b])
        while i < last and log_f[i + 1] <= q:
            i += 1
        index[b], offset[b] = i, q - log_f[i]
    out = np.empty((n_channels, freqs.size), dtype=np.complex128)
    for ch in range(n_channels):
        for b in range(freqs.size):
            c, t = coef[ch, index[b]], offset[b]
            magnitude = np.exp(((c[0] * t + c[1]) * t + c[2]) * t + c[3])
            phase = ((c[4] * t + c[5]) * t + c[6]) * t + c[7]
            out[ch, b] = spectrum[b] * complex(magnitude * np.cos(phase), magnitude * np.sin(phase))
    return out


def _membrane_velocity(
    spectrum: np.ndarray, half_rate: float, table: _Table, channels: slice
) -> np.ndarray:
    """Velocity of the ``channels`` of the table, ``(channels, N // 2 + 1)``, sampled at
    ``half_rate``, from the recording's one-sided spectrum (``N // 2 + 1`` bins)."""
    freqs = np.linspace(1.0, half_rate, spectrum.size)
    filtered = _filter(table.coef[channels], table.log_f, freqs, spectrum)
    return np.fft.ifft(filtered, axis=1).real


def cochlea_channel_frequencies(
    n_channels: int = 700, params: CochleaParameters | None = None
) -> np.ndarray:
    """Best frequency of each channel in Hz: where its membrane velocity per unit of stimulus
    peaks. Channel 0 is at the base (highest frequency: 22.5 kHz for the defaults, the base's
    resonance ``sqrt((c0 - a) / m) / (2 pi)``) and the last at the apex (100 Hz); a recording
    sampled at ``fs`` carries nothing above ``fs / 2``, so with 8 kHz audio the first 215 of 700
    channels (best frequency above 4 kHz) see only the tails of their filters.

    >>> f = cochlea_channel_frequencies(700)
    >>> bool(np.all(np.diff(f) < 0))
    True
    """
    n_channels = _check_channels(n_channels)
    mp = (params or CochleaParameters()).membrane
    table = _transfer_table(n_channels, _table_top(0.0, mp), mp)
    log_mag = table.coef[:, :, 3]  # values at the knots (the last knot left out)
    j = np.argmax(log_mag, axis=1)
    step = table.log_f[1] - table.log_f[0]
    inner = (j > 0) & (j < log_mag.shape[1] - 1)
    rows, jj = np.nonzero(inner)[0], j[inner]
    lo, mid, hi = log_mag[rows, jj - 1], log_mag[rows, jj], log_mag[rows, jj + 1]
    shift = np.zeros(n_channels)
    shift[rows] = 0.5 * (lo - hi) / (lo - 2 * mid + hi)
    return np.exp(table.log_f[j] + shift * step)


# ----------------------------------------------------------------------------- inner hair cell
class _HairCellSteps(NamedTuple):
    """Meddis's rates as amounts per sample, and the resting state of the three pools."""

    offset: float  # A
    scale: float  # B
    permeability: float  # g dt
    replenish: float  # y dt
    capacity: float  # M
    cleft_out: float  # (l + r) dt: loss and reuptake
    reuptake: float  # r dt
    reprocess: float  # x dt
    gain: float  # h dt
    free0: float  # q at rest
    cleft0: float  # c at rest
    store0: float  # w at rest


def _hair_cell_steps(hp: HairCellParameters, rate: float) -> _HairCellSteps:
    dt = 1.0 / rate
    a, b = hp.permeability_offset, hp.permeability_scale
    g, y = hp.max_permeability, hp.replenish_rate
    lr = hp.loss_rate + hp.reuptake_rate
    k_rest = g * a / (a + b)
    cleft = hp.max_transmitter * y * k_rest / (hp.loss_rate * k_rest + y * lr)
    return _HairCellSteps(
        offset=a,
        scale=b,
        permeability=g * dt,
        replenish=y * dt,
        capacity=hp.max_transmitter,
        cleft_out=lr * dt,
        reuptake=hp.reuptake_rate * dt,
        reprocess=hp.reprocess_rate * dt,
        gain=hp.firing_gain * dt,
        free0=cleft * lr / k_rest,
        cleft0=cleft,
        store0=cleft * hp.reuptake_rate / hp.reprocess_rate,
    )


@njit(cache=True, nogil=True)
def _hair_cells(velocity: np.ndarray, s: _HairCellSteps) -> np.ndarray:
    """Firing probability per sample of every channel: the free pool ``q`` releases into the
    cleft ``c`` through a permeability that grows with the velocity; the cleft loses to outside
    and to reprocessing ``w``, which returns to ``q``; the factory refills ``q`` up to its
    capacity. One explicit step per sample, each pool clipped at zero."""
    n_channels, n_steps = velocity.shape
    out = np.empty_like(velocity)
    for ch in range(n_channels):
        q, c, w = s.free0, s.cleft0, s.store0
        for t in range(n_steps):
            drive = velocity[ch, t] + s.offset
            k = s.permeability * drive / (drive + s.scale) if drive > 0.0 else 0.0
            refill = s.replenish * (s.capacity - q) if q < s.capacity else 0.0
            release = k * q
            back = s.reprocess * w
            q_next = q + refill - release + back
            c_next = c + release - s.cleft_out * c
            w_next = w + s.reuptake * c - back
            q = q_next if q_next > 0.0 else 0.0
            c = c_next if c_next > 0.0 else 0.0
            w = w_next if w_next > 0.0 else 0.0
            out[ch, t] = c * s.gain
    return out


# ----------------------------------------------------------------------------- bushy cells
class _BushySteps(NamedTuple):
    """The fibres and the bushy cell per sample."""

    n_fibres: int
    dead_steps: int  # samples a fibre stays silent after it fires
    refractory: float  # the bushy cell's refractory period in samples (not rounded)
    syn_decay: float  # exp(-dt / tau_syn)
    mem_decay: float  # exp(-dt / tau_mem)
    gain: float  # potential per unit of synaptic current per sample: weight / n_fibres * dt


def _bushy_steps(bp: BushyCellParameters, rate: float) -> _BushySteps:
    dt = 1.0 / rate
    refractory = bp.tau_refrac * rate
    return _BushySteps(
        n_fibres=int(bp.n_fibres),
        dead_steps=max(int(np.ceil(refractory)) - 1, 0),  # d samples after a spike, d < refractory
        refractory=float(refractory),
        syn_decay=float(np.exp(-dt / bp.tau_syn)),
        mem_decay=float(np.exp(-dt / bp.tau_mem)),
        gain=bp.weight / bp.n_fibres * dt,
    )


@njit(cache=True, inline="always")
def _binomial(n: int, p: float, u: float) -> int:
    """A Binomial(n, p) draw from one uniform number ``u`` by inversion of its CDF (from the
    lighter tail, so that ``(1 - p)^n`` stays far from underflow)."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    flip = p > 0.5
    q = 1.0 - p if flip else p
    odds = q / (1.0 - q)
    term = (1.0 - q) ** n
    cdf = term
    k = 0
    while u > cdf and k < n:
        term *= odds * (n - k) / (k + 1)
        k += 1
        cdf += term
    return n - k if flip else k


@njit(cache=True, nogil=True)
def _bushy_cells(prob: np.ndarray, uniforms: np.ndarray, s: _BushySteps) -> np.ndarray:
    """Spikes of the bushy cell of every channel, ``(samples, channels)`` booleans.

    Per sample, the fibres not in their dead time fire with the hair cell's probability (their
    number drawn at once); the synaptic current decays and adds the fibres that fired; unless
    refractory, the potential decays and integrates the current, capped at 1. A potential at 1
    is a spike at that sample, seen one sample later, where the potential resets to 0 and the
    cell stays refractory (no integration) for ``refractory`` samples.
    """
    n_channels, n_steps = prob.shape
    spikes = np.zeros((n_steps, n_channels), dtype=np.bool_)
    fired = np.zeros(max(s.dead_steps, 1), dtype=np.int64)  # ring: fibres fired in last samples
    for ch in range(n_channels):
        fired[:] = 0
        silent = 0
        current = 0.0
        v = 0.0
        counter = 0.0
        for t in range(n_steps):
            k = _binomial(s.n_fibres - silent, prob[ch, t], uniforms[ch, t])
            if s.dead_steps > 0:
                slot = t % s.dead_steps
                silent += k - fired[slot]
                fired[slot] = k
            previous = v
            v = 0.0
            if t > 0:
                if counter <= 0.0:
                    if previous < 1.0:
                        v = previous * s.mem_decay
                    else:
                        spikes[t - 1, ch] = True
                        counter = s.refractory
                current *= s.syn_decay
            current += k
            if counter <= 0.0:
                v = min(v + current * s.gain, 1.0)
            counter -= 1.0
    return spikes


# ----------------------------------------------------------------------------- the encoders
def _events(steps: np.ndarray, channels: np.ndarray, rate: float) -> np.ndarray:
    """Spikes at samples ``steps`` of a ``rate`` Hz grid as events, sorted by time then
    channel."""
    if np.any(np.diff(steps) < 0):
        order = np.lexsort((channels, steps))
        steps, channels = steps[order], channels[order]
    events = np.empty(steps.size, dtype=AUDIO_EVENT_DTYPE)
    events["t"] = np.round(steps * (1e6 / rate))
    events["x"] = channels
    return events


def _block_width(n_bins: int, n_channels: int) -> int:
    """Channels simulated together: as many as keep a block's arrays below
    :data:`_BLOCK_BYTES` (at least one, at most :data:`_CHANNEL_BLOCK`)."""
    return max(1, min(_CHANNEL_BLOCK, n_channels, _BLOCK_BYTES // (_BYTES_PER_BIN * n_bins)))


def _builtin(x: np.ndarray, fs: float, n_channels: int, seed: int, p: CochleaParameters):
    """The model, a block of channels at a time: the block is as wide as keeps its arrays
    below :data:`_BLOCK_BYTES` (a long recording takes one channel at a time), and each
    block's spikes are kept as (step, channel) pairs, so that memory is a few arrays of the
    recording's length plus the spikes. The random numbers are the same whatever the block
    size (each channel's are drawn in turn)."""
    rate = fs // 2
    spectrum = np.fft.rfft(_level(x, p.rms_level))
    table = _transfer_table(n_channels, _table_top(fs, p.membrane), p.membrane)
    hair_cell, bushy = _hair_cell_steps(p.hair_cell, rate), _bushy_steps(p.bushy, rate)
    rng = np.random.default_rng(seed)
    n_steps = spectrum.size
    step_dtype = np.int32 if n_steps < 2**31 else np.int64
    width = _block_width(n_steps, n_channels)
    blocks = []
    for start in range(0, n_channels, width):
        block = slice(start, min(start + width, n_channels))
        prob = _hair_cells(_membrane_velocity(spectrum, rate, table, block), hair_cell)
        fired = _bushy_cells(prob, rng.random(prob.shape), bushy)
        del prob
        steps, channels = np.nonzero(fired)  # time first, then channel
        del fired
        blocks.append((steps.astype(step_dtype), (channels + start).astype(np.int16)))
    return _merged_events(blocks, n_steps, rate)


def _merged_events(blocks: list, n_steps: int, rate: float) -> np.ndarray:
    """The spikes of the blocks (each sorted by step, then channel; blocks in channel order)
    as events sorted by time, then channel: a counting sort by step that places each block's
    spikes of a step after those of the blocks before it. Empties ``blocks`` as it goes."""
    counts = np.zeros(n_steps, dtype=np.int64)
    for steps, _ in blocks:
        counts += np.bincount(steps, minlength=n_steps)
    free = np.zeros(n_steps, dtype=np.int64)  # where a step's next spike goes
    np.cumsum(counts[:-1], out=free[1:])
    events = np.empty(int(counts.sum()), dtype=AUDIO_EVENT_DTYPE)
    del counts
    scale = 1e6 / rate
    while blocks:
        steps, channels = blocks.pop(0)
        first = np.searchsorted(steps, steps, side="left")  # a step's first spike in the block
        where = free[steps] + (np.arange(steps.size) - first)
        events["t"][where] = np.round(steps * scale)
        events["x"][where] = channels
        free += np.bincount(steps, minlength=n_steps)
    return events


def _lauscher(x: np.ndarray, fs: float, n_channels: int, seed: int, p: CochleaParameters):
    """The same model run by the lauscher package, with numpy's global random state seeded for
    the call and restored after it."""
    try:
        from lauscher.audiowaves import MonoAudioWave
        from lauscher.transformations import (
            BasilarMembrane,
            BushyCell,
            HairCell,
            HanningWindow,
            RmsNormalizer,
        )
    except ImportError as e:
        raise ImportError(
            "encoder='lauscher' needs the lauscher package (LGPL, with soundfile): "
            "pip install lauscher; or use encoder='builtin'"
        ) from e
    mp, hp, bp = p.membrane, p.hair_cell, p.bushy
    stages = [
        RmsNormalizer(p.rms_level),
        HanningWindow(),
        BasilarMembrane(
            channels=n_channels,
            a=mp.stiffness_offset,
            alpha=mp.stiffness_decay,
            rho=mp.fluid_density,
            c=mp.length,
            c0=mp.stiffness,
            de=mp.damping,
            h=mp.height,
            m=mp.mass,
        ),
        HairCell(
            y=hp.replenish_rate,
            g=hp.max_permeability,
            l=hp.loss_rate,
            r=hp.reuptake_rate,
            x=hp.reprocess_rate,
            a=hp.permeability_offset,
            b=hp.permeability_scale,
            h=hp.firing_gain,
            m=hp.max_transmitter,
        ),
        BushyCell(
            n_convergence=int(bp.n_fibres),
            tau_mem=bp.tau_mem,
            tau_syn=bp.tau_syn,
            tau_refrac=bp.tau_refrac,
            weight=bp.weight,
        ),
    ]
    state = np.random.get_state()  # noqa: NPY002
    try:
        np.random.seed(seed)  # noqa: NPY002 (lauscher draws from the global state)
        data = MonoAudioWave(x, int(fs) if float(fs).is_integer() else fs)
        for stage in stages:
            data = data.transform(stage)
    finally:
        np.random.set_state(state)  # noqa: NPY002
    rate = fs // 2
    steps = np.round(np.asarray(data.spike_times) * rate).astype(np.int64)
    return _events(steps, np.asarray(data.spike_labels).astype(np.int64), rate)


def cochlea_events(
    samples: npt.ArrayLike,
    sample_rate: float,
    n_channels: int = 700,
    *,
    seed: int = 0,
    encoder: str = "builtin",
    params: CochleaParameters | None = None,
) -> np.ndarray:
    """Spikes of ``n_channels`` cochlear channels for a mono recording, as the Spiking
    Heidelberg Digits were made (lauscher's ``Wave2Spike``; the stages are in the module's
    docstring).

    Args:
        samples: mono audio, 1-D, any scale (it is normalised to an RMS of 0.3).
        sample_rate: in Hz, at least 1000; the spikes fall on a grid of ``sample_rate // 2``.
        n_channels: channels from the base (0, high frequencies) to the apex (low
            frequencies); their best frequencies are :func:`cochlea_channel_frequencies`.
        seed: seed of the fibres' randomness (0 to 2**32 - 1): the same input and seed give the
            same spikes.
        encoder: ``"builtin"`` (this module's vectorised model) or ``"lauscher"`` (the
            lauscher package itself: the reference, some 300 times slower).
        params: the model's constants (default: lauscher's).

    Returns:
        Events of :data:`~asyncsnn.data.AUDIO_EVENT_DTYPE`: ``t`` in microseconds, ``x`` the
        channel, sorted by time, then channel.

    Raises:
        ValueError: for audio that is not 1-D (stereo), empty, silent or not finite, a sample
            rate below 1 kHz, or a bad channel count, seed or encoder name.
        ImportError: for ``encoder="lauscher"`` where lauscher is not installed.
    """
    if encoder not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS}, got {encoder!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in 0..2**32 - 1, got {seed!r}")
    n_channels = _check_channels(n_channels)
    x, fs = _check_audio(samples, sample_rate)
    params = params or CochleaParameters()
    run = _builtin if encoder == "builtin" else _lauscher
    return run(x, fs, n_channels, int(seed), params)
