"""Synaptic footprints: which target each source neuron reaches, through which weight.

A projection is a chain of linear modules (at most one of them weighted: ``nn.Linear`` or
``nn.Conv2d``; the others parameter-free: pooling, flatten). Its effective connectivity is
stored as a list of *entries* ``(src, dst, widx, coef)``: source neuron ``src`` adds
``coef * weight.flatten()[widx] * spike`` to target neuron ``dst`` (``widx = -1`` means a fixed
weight of 1, for chains without a weighted module). Neurons are numbered in the flattened order
of the module's output (channel, row, column).

The asynchronous engine delivers a spike by gathering its entries only, so a forward step costs
the chosen spikes times their fan-out, never a whole layer. The dense ``apply`` path (module
forward) is the same map, used for layered execution and for the input delivery.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SumPool2d(nn.Module):
    """Sum pooling (as NIR's ``SumPool2d``): the sum of each window, no normalisation.

    >>> SumPool2d(2)(torch.ones(1, 1, 4, 4))[0, 0]
    tensor([[4., 4.],
            [4., 4.]])
    """

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            count_include_pad=True,
            divisor_override=1,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(a) for a in v)
    if len(v) == 1:
        return (v[0], v[0])
    if len(v) != 2:
        raise ValueError(f"expected an int or a pair, got {v!r}")
    return v  # type: ignore[return-value]


WEIGHTED = (nn.Linear, nn.Conv2d)
PARAMETER_FREE = (nn.AvgPool2d, SumPool2d, nn.Flatten, nn.Identity)
SUPPORTED = WEIGHTED + PARAMETER_FREE


@dataclass
class Footprint:
    """Effective sparse map of a module chain: parallel int64/float64 arrays."""

    src: np.ndarray
    dst: np.ndarray
    widx: np.ndarray
    coef: np.ndarray
    n_src: int
    n_dst: int

    def __len__(self) -> int:
        return len(self.src)


def output_shape(module: nn.Module, in_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Shape (without batch) of ``module``'s output for an input of shape ``in_shape``."""
    if isinstance(module, nn.Linear):
        if len(in_shape) == 1 and in_shape[0] != module.in_features:
            raise ValueError(
                f"{module} expects {module.in_features} inputs but receives {in_shape[0]}"
            )
        if in_shape != (module.in_features,):
            raise ValueError(
                f"{module} expects inputs of shape ({module.in_features},) but receives "
                f"{in_shape}; insert nn.Flatten() before it if the input is multi-dimensional"
            )
        return (module.out_features,)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ValueError("only nn.Flatten() with start_dim=1, end_dim=-1 is supported")
        return (math.prod(in_shape),)
    if isinstance(module, nn.Identity):
        return in_shape
    if isinstance(module, (nn.Conv2d, nn.AvgPool2d, SumPool2d)):
        if len(in_shape) != 3:
            raise ValueError(f"{module} expects (channels, height, width) inputs, got {in_shape}")
        if isinstance(module, nn.Conv2d) and in_shape[0] != module.in_channels:
            raise ValueError(
                f"{module} expects {module.in_channels} input channels, got {in_shape[0]}"
            )
        w = getattr(module, "weight", None)
        probe = torch.zeros(
            1,
            *in_shape,
            dtype=w.dtype if w is not None else None,
            device=w.device if w is not None else None,
        )
        with torch.no_grad():
            return tuple(module(probe).shape[1:])
    raise TypeError(
        f"unsupported module {type(module).__name__}: a projection is a chain of nn.Linear, "
        "nn.Conv2d, nn.AvgPool2d, asyncsnn.SumPool2d, nn.Flatten and nn.Identity"
    )


def module_footprint(module: nn.Module, in_shape: tuple[int, ...]) -> Footprint:
    """The sparse map of one module (weights referenced by index, not copied)."""
    out_shape = output_shape(module, in_shape)
    n_in, n_out = math.prod(in_shape), math.prod(out_shape)
    if isinstance(module, nn.Linear):
        k, j = np.meshgrid(np.arange(n_out), np.arange(n_in), indexing="ij")
        return Footprint(j.ravel(), k.ravel(), (k * n_in + j).ravel(), np.ones(k.size), n_in, n_out)
    if isinstance(module, (nn.Flatten, nn.Identity)):
        i = np.arange(n_in)
        return Footprint(i, i, np.full(n_in, -1), np.ones(n_in), n_in, n_out)
    if isinstance(module, nn.Conv2d):
        return _conv_footprint(module, in_shape, out_shape)
    return _pool_footprint(module, in_shape, out_shape)


def _window_taps(out_len: int, in_len: int, k: int, s: int, p: int, d: int):
    """For every (output position, kernel tap): the input position and whether it is inside."""
    o = np.arange(out_len)[:, None]
    t = np.arange(k)[None, :]
    pos = o * s - p + t * d
    return np.broadcast_to(o, pos.shape), np.broadcast_to(t, pos.shape), pos


def _conv_footprint(conv: nn.Conv2d, in_shape, out_shape) -> Footprint:
    if conv.padding_mode != "zeros":
        raise ValueError(f"{conv}: only padding_mode='zeros' is supported")
    cin, h, w = in_shape
    cout, ho, wo = out_shape
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            ph = pw = 0
        else:  # "same": torch pads the extra element at the end; the start pad is the floor
            ph, pw = (dh * (kh - 1)) // 2, (dw * (kw - 1)) // 2
    else:
        ph, pw = conv.padding
    g = conv.groups
    cin_g, cout_g = cin // g, cout // g
    oy, ky, iy = (a.ravel() for a in _window_taps(ho, h, kh, sh, ph, dh))
    keep_y = (iy >= 0) & (iy < h)
    oy, ky, iy = oy[keep_y], ky[keep_y], iy[keep_y]
    ox, kx, ix = (a.ravel() for a in _window_taps(wo, w, kw, sw, pw, dw))
    keep_x = (ix >= 0) & (ix < w)
    ox, kx, ix = ox[keep_x], kx[keep_x], ix[keep_x]
    # spatial pairs: every valid row tap with every valid column tap
    ya, xa = np.meshgrid(np.arange(len(oy)), np.arange(len(ox)), indexing="ij")
    ya, xa = ya.ravel(), xa.ravel()
    sp_out = oy[ya] * wo + ox[xa]
    sp_in = iy[ya] * w + ix[xa]
    sp_tap = ky[ya] * kw + kx[xa]
    # channels: output channel o reads input channels of its group
    o = np.arange(cout)[:, None]
    ci = (o // cout_g) * cin_g + np.arange(cin_g)[None, :]
    cl = np.broadcast_to(np.arange(cin_g)[None, :], ci.shape)
    o = np.broadcast_to(o, ci.shape).ravel()
    ci, cl = ci.ravel(), cl.ravel()
    src = (ci[:, None] * (h * w) + sp_in[None, :]).ravel()
    dst = (o[:, None] * (ho * wo) + sp_out[None, :]).ravel()
    widx = ((o * cin_g + cl)[:, None] * (kh * kw) + sp_tap[None, :]).ravel()
    return Footprint(src, dst, widx, np.ones(len(src)), cin * h * w, cout * ho * wo)


def _pool_footprint(pool: nn.Module, in_shape, out_shape) -> Footprint:
    c, h, w = in_shape
    _, ho, wo = out_shape
    if isinstance(pool, SumPool2d):
        (kh, kw), (sh, sw), (ph, pw) = pool.kernel_size, pool.stride, pool.padding
        divisor, include_pad = 1.0, True
    else:
        if pool.ceil_mode:
            raise ValueError(f"{pool}: ceil_mode=True is not supported")
        kh, kw = _pair(pool.kernel_size)
        sh, sw = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        ph, pw = _pair(pool.padding)
        divisor = pool.divisor_override
        include_pad = pool.count_include_pad
    oy, _, iy = (a.ravel() for a in _window_taps(ho, h, kh, sh, ph, 1))
    ox, _, ix = (a.ravel() for a in _window_taps(wo, w, kw, sw, pw, 1))
    ya, xa = np.meshgrid(np.arange(len(oy)), np.arange(len(ox)), indexing="ij")
    ya, xa = ya.ravel(), xa.ravel()
    inside = (iy[ya] >= 0) & (iy[ya] < h) & (ix[xa] >= 0) & (ix[xa] < w)
    sp_out = oy[ya] * wo + ox[xa]
    if divisor is not None:
        coef = np.full(len(sp_out), 1.0 / divisor)
    elif include_pad:
        # torch counts padded cells inside the (input + padding) frame
        y_hi = np.minimum(oy * sh - ph + kh, h + ph)[ya]
        x_hi = np.minimum(ox * sw - pw + kw, w + pw)[xa]
        area = (y_hi - (oy * sh - ph)[ya]) * (x_hi - (ox * sw - pw)[xa])
        coef = 1.0 / area
    else:
        counts = np.bincount(sp_out[inside], minlength=ho * wo)
        coef = 1.0 / np.maximum(counts[sp_out], 1)
    sp_out, coef = sp_out[inside], coef[inside]
    sp_in = (iy[ya] * w + ix[xa])[inside]
    ch = np.arange(c)[:, None]
    src = (ch * (h * w) + sp_in[None, :]).ravel()
    dst = (ch * (ho * wo) + sp_out[None, :]).ravel()
    coef = np.broadcast_to(coef[None, :], (c, len(coef))).ravel()
    return Footprint(
        src, dst, np.full(len(src), -1), coef.astype(np.float64), c * h * w, c * ho * wo
    )


def compose(a: Footprint, b: Footprint) -> Footprint:
    """The footprint of ``b`` after ``a`` (at most one of them may reference weights)."""
    if a.n_dst != b.n_src:
        raise ValueError(f"cannot chain maps of {a.n_dst} outputs into {b.n_src} inputs")
    order = np.argsort(b.src, kind="stable")
    counts = np.bincount(b.src, minlength=b.n_src)
    starts = np.cumsum(counts) - counts
    rep = counts[a.dst]
    ai = np.repeat(np.arange(len(a)), rep)
    within = np.arange(rep.sum()) - np.repeat(np.cumsum(rep) - rep, rep)
    bi = order[starts[a.dst][ai] + within]
    wa, wb = a.widx[ai], b.widx[bi]
    if np.any((wa >= 0) & (wb >= 0)):
        raise ValueError("a projection may contain at most one weighted module")
    return Footprint(
        a.src[ai], b.dst[bi], np.where(wa >= 0, wa, wb), a.coef[ai] * b.coef[bi], a.n_src, b.n_dst
    )


def chain_footprint(modules, in_shape: tuple[int, ...]) -> tuple[Footprint, tuple[int, ...]]:
    """Footprint and output shape of a chain of modules."""
    shape = tuple(in_shape)
    fp = None
    for m in modules:
        f = module_footprint(m, shape)
        shape = output_shape(m, shape)
        fp = f if fp is None else compose(fp, f)
    if fp is None:
        raise ValueError("a projection needs at least one module")
    return fp, shape


def apply_chain(modules, x: torch.Tensor, bias: bool) -> torch.Tensor:
    """Dense forward of the chain on a batch ``x``; weighted modules add their bias iff ``bias``."""
    for m in modules:
        if isinstance(m, nn.Linear):
            x = F.linear(x, m.weight, m.bias if bias else None)
        elif isinstance(m, nn.Conv2d):
            x = F.conv2d(
                x, m.weight, m.bias if bias else None, m.stride, m.padding, m.dilation, m.groups
            )
        else:
            x = m(x)
    return x
