"""Measure one benchmark configuration in this process and print one JSON line.

    python -m benchmarks.worker '{"network": "fc", "engine": "asyncsnn-async", ...}'

The suite (:mod:`benchmarks.suite`) starts one such process per configuration, so that the
peak resident memory it reports belongs to that configuration alone. Keys of the spec:

- ``network``: ``fc``, ``conv`` or ``dvs`` (see :mod:`benchmarks.workloads`);
- ``engine``: ``asyncsnn-async``, ``asyncsnn-layered`` or ``snntorch``;
- ``policy``: scheduling policy of ``asyncsnn-async`` (``random``, ``momentum``, ``fifo``);
- ``backend``: ``asyncsnn.run``'s ``backend`` (``numba``, ``torch``) or ``null`` (not passed);
- ``mode``: ``inference`` or ``train`` (one step: forward, cross-entropy on the output spike
  counts, backward, Adam);
- ``batch``; ``samples``: distinct samples run one after another at batch 1;
- ``timesteps`` (``null``: the workload's), ``data`` (folder holding ``nmnist-subset/`` and
  ``dvs128-clips/``), ``budget_s``, ``min_repeats``, ``max_repeats``, ``seed``;
- ``device``: ``cpu`` (default) or ``cuda``: the network, its snnTorch twin and the data on
  that device; a repetition then ends with ``torch.cuda.synchronize()``, and the memory
  figures are the GPU's (``torch.cuda.max_memory_allocated``: ``peak_rss_mb`` is the peak
  allocated, ``extra_peak_mb`` the peak during warm-up and repetitions minus what was
  allocated just before them).

Timing: one untimed warm-up (compilation, cached tables), then repetitions, as many as fit
in ``budget_s`` within ``[min_repeats, max_repeats]`` (fewer where a single repetition
takes more than twice the budget); the median is reported, in wall time (``ms_per_sample``)
and in the process's CPU time (``cpu_ms_per_sample``, every thread counted). A repetition is
the whole batch (or, at batch 1, all ``samples`` one by one); a training repetition is one
step. ``asyncsnn`` names the package measured (the suite's A/B mode puts another tree's
``src`` first on ``PYTHONPATH``). Memory: ``peak_rss_mb`` is the process's peak resident set
(``ru_maxrss``); ``extra_peak_mb`` is the peak during warm-up and repetitions minus the
resident set just before them, after model, data, libraries and compiled kernels were loaded
by a run on one timestep of one sample: the memory the workload itself takes.
"""

from __future__ import annotations

import gc
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import asyncsnn

from . import workloads as W

ENGINES = ("asyncsnn-async", "asyncsnn-layered", "snntorch")
MODES = ("inference", "train")
LR, WEIGHT_DECAY = 5e-4, 1e-5  # the study's N-MNIST settings


# ------------------------------------------------------------------------------ memory
def rss_mb() -> float:
    """Current resident set in MiB (Linux; elsewhere the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set of this process in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def release_free_memory() -> None:
    """Give memory freed earlier (data loading) back to the system where glibc allows it, so
    that later allocations show in the resident set instead of reusing it unseen."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak() -> bool:
    """Restart the kernel's peak-RSS record (``VmHWM``) at the current RSS, where possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def hwm_mb() -> float | None:
    """``VmHWM`` (peak resident set since the last :func:`reset_peak`) in MiB, or ``None``."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return None


# ------------------------------------------------------------------------------ timing
def timed_repeats(
    fn: Callable[[], None], budget_s: float, lo: int, hi: int, cpu: list[float] | None = None
) -> list[float]:
    """Warm up once, then repeat ``fn``; returns the seconds of each repetition (wall time).
    ``cpu``, where given, receives the process CPU seconds of each repetition (every thread
    of this process: more than the wall time where several threads work, less where the
    process waited for a core)."""
    fn()
    times: list[float] = []
    while True:
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
        n, spent = len(times), sum(times)
        if n >= hi or (n >= lo and spent / n * (n + 1) > budget_s) or spent > 2 * budget_s:
            return times


def _synchronised(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """``fn`` that returns once the GPU has finished its work (on a CPU: ``fn``)."""
    if device.type != "cuda":
        return fn

    def run():
        fn()
        torch.cuda.synchronize(device)

    return run


def _batches(x: torch.Tensor, y, batch: int, samples: int):
    """The inputs of one repetition: ``samples`` single samples, or one batch."""
    if batch == 1:
        return [(x[:, i : i + 1], None if y is None else y[i : i + 1]) for i in range(samples)]
    idx = torch.arange(batch) % x.shape[1]  # more than the data holds: repeat samples
    return [(x[:, idx].contiguous(), None if y is None else y[idx])]


# ------------------------------------------------------------------------------ engines
def _run_kwargs(spec: dict, work: W.Workload) -> dict:
    kw = {"dt": work.dt, "seed": spec.get("seed", 0)}
    if spec["engine"] == "asyncsnn-layered":
        kw["execution"] = "layered"
    else:
        kw.update(execution="async", scheduler=spec["policy"], group_size=W.GROUP_SIZE)
        if spec.get("backend"):
            kw["backend"] = spec["backend"]
    return kw


def _result_stats(r) -> dict:
    return {
        "synops": float(r.synops.sum()),
        "spikes": float(r.spikes.detach().sum()),
        "forward_steps": float(r.forward_steps.float().sum()),
        "timesteps": r.forward_steps.numel(),
    }


def _snntorch_stats(net, x, record) -> dict:
    return {
        "synops": W.layered_synops(net, x, record),
        "spikes": float(sum(float(z.detach().sum()) for layer in record for z in layer)),
        # as asyncsnn counts layered execution: one step per layer that sends spikes
        "forward_steps": float((len(record) - 1) * x.shape[0] * x.shape[1]),
        "timesteps": x.shape[0] * x.shape[1],
    }


def _inference(spec, work, net, groups):
    if spec["engine"] == "snntorch":
        model = W.SnnTorchNet(work).to(_device(spec)).eval()
        last: list = []

        def rep():
            last.clear()  # keep one repetition's spikes at a time
            last.extend((xb, model(xb)[1]) for xb, _ in groups)

        def stats():
            parts = [_snntorch_stats(net, xb, record) for xb, record in last]
            return {k: sum(p[k] for p in parts) for k in parts[0]}

        return rep, stats
    kw = _run_kwargs(spec, work)
    results: list = []

    def rep():
        results.clear()  # keep one repetition's results at a time
        results.extend(asyncsnn.run(net, xb, **kw) for xb, _ in groups)

    def stats():
        parts = [_result_stats(r) for r in results]
        return {k: sum(p[k] for p in parts) for k in parts[0]}

    return rep, stats


def _train(spec, work, net, groups):
    ((xb, yb),) = groups
    if yb is None:  # the DVS clips have no labels: train towards class 0 (throughput only)
        yb = torch.zeros(xb.shape[1], dtype=torch.long, device=xb.device)
    step_no = [0]
    if spec["engine"] == "snntorch":
        model = W.SnnTorchNet(work).to(_device(spec)).train()
        opt = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        last: list = []

        def rep():
            last.clear()
            opt.zero_grad(set_to_none=True)
            counts, record = model(xb)
            loss = F.cross_entropy(counts, yb)
            loss.backward()
            opt.step()
            last.append(record)

        def stats():
            return _snntorch_stats(net, xb, last[0])

        return rep, stats

    from asyncsnn.training import TrainConfig, forward, loss_and_scores

    cfg = TrainConfig(
        dataset="dvsgesture" if work.name == "dvs" else "nmnist",
        dt=work.dt,
        timesteps=xb.shape[0],
        tau_m=W.TAU_M,
        threshold=W.THRESHOLD,
        training="layered" if spec["engine"] == "asyncsnn-layered" else "unlayered",
        scheduler=spec.get("policy") or "momentum",
        group_size=W.GROUP_SIZE,
        input_dropout=0.0,  # snnTorch's step has none: the same work on both sides
        refractory_dropout=0.0,
        batch_size=xb.shape[1],
        lr=LR,
        weight_decay=WEIGHT_DECAY,
    )
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    batch_first = xb.transpose(0, 1)
    backend = (spec.get("backend") or "auto") if spec["engine"] == "asyncsnn-async" else "auto"
    results: list = []

    def rep():
        results.clear()
        opt.zero_grad(set_to_none=True)
        r = forward(net, batch_first, cfg, training=True, seed=step_no[0], backend=backend)
        step_no[0] += 1
        loss, _ = loss_and_scores(r, yb, cfg)
        loss.backward()
        opt.step()
        results.append(r)

    def stats():
        return _result_stats(results[0])

    return rep, stats


# ------------------------------------------------------------------------------ main
def _device(spec: dict) -> torch.device:
    return torch.device(spec.get("device") or "cpu")


def _gpu_mb(value: int) -> float:
    return value / 2**20


def measure(spec: dict) -> dict:
    """Measure one configuration; see the module docstring for ``spec``."""
    if spec["engine"] not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {spec['engine']!r}")
    if spec["mode"] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {spec['mode']!r}")
    start = time.perf_counter()
    batch = int(spec["batch"])
    samples = int(spec.get("samples") or 1) if batch == 1 else batch
    work = W.build(spec["network"], seed=spec.get("seed", 0))
    net = W.asyncsnn_network(work)
    x, y = W.inputs(work, Path(spec["data"]), samples, spec.get("timesteps"))
    groups = _batches(x, y, batch, min(samples, x.shape[1]))
    device = _device(spec)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device cuda was asked for, but torch sees no CUDA GPU")
        net = net.to(device)
        groups = [(xb.to(device), None if yb is None else yb.to(device)) for xb, yb in groups]
    n_samples = sum(xb.shape[1] for xb, _ in groups)
    make = _train if spec["mode"] == "train" else _inference
    grad = torch.enable_grad if spec["mode"] == "train" else torch.no_grad
    # load what every run needs (libraries, compiled kernels, cached tables) on one timestep
    # of one sample, so that the extra peak below is the memory the workload itself takes
    tiny = [(groups[0][0][:1, :1], None if groups[0][1] is None else groups[0][1][:1])]
    with grad():
        make(spec, work, net, tiny)[0]()
    rep, stats = make(spec, work, net, groups)
    rep = _synchronised(rep, device)

    gc.collect()
    release_free_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = _gpu_mb(torch.cuda.memory_allocated(device))
        torch.cuda.reset_peak_memory_stats(device)
    else:
        before = rss_mb()
        peak_so_far = peak_rss_mb()  # resetting the peak below resets ru_maxrss too
        clean_peak = reset_peak()
    cpu_times: list[float] = []
    with grad():
        times = timed_repeats(
            rep,
            float(spec.get("budget_s", 5.0)),
            int(spec.get("min_repeats", 3)),
            int(spec.get("max_repeats", 7)),
            cpu_times,
        )
    if device.type == "cuda":
        peak = _gpu_mb(torch.cuda.max_memory_allocated(device))
        extra = peak - before
    else:
        peak_since = peak_rss_mb()
        after = hwm_mb() if clean_peak else None
        extra = (after if after is not None else peak_since) - before
        peak = max(peak_so_far, peak_since, after or 0.0)
    s = stats()
    t = statistics.median(times)
    return {
        "ms_per_sample": 1e3 * t / n_samples,
        "cpu_ms_per_sample": 1e3 * statistics.median(cpu_times) / n_samples,
        "synaptic_events_per_s": s["synops"] / t,
        "peak_rss_mb": peak,
        "extra_peak_mb": max(0.0, extra),
        "rss_before_mb": before,
        "synops_per_sample": s["synops"] / n_samples,
        "spikes_per_sample": s["spikes"] / n_samples,
        "forward_steps_per_timestep": s["forward_steps"] / s["timesteps"],
        "timesteps": int(x.shape[0]),
        "samples_per_repeat": n_samples,
        "repeats": len(times),
        "times_ms": [1e3 * v for v in times],
        "cpu_times_ms": [1e3 * v for v in cpu_times],
        "asyncsnn": str(Path(asyncsnn.__file__).resolve().parent),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "wall_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.worker '<JSON spec>'", file=sys.stderr)
        return 2
    result = measure(json.loads(argv[0]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
