"""``asyncsnn explore``: the page's data against the run's own figures, the monitor against a
run without it, and the page in a headless Chromium (skipped without a browser, failing in
CI), stepped frame by frame against the figures of asyncsnn's own runs."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import asyncsnn
from asyncsnn import Network, OutputTrace
from asyncsnn.cli import main
from asyncsnn.dynamics import decay_factor
from asyncsnn.evaluation import Execution
from asyncsnn.explore import ExploreMonitor, explore_data, page, record
from asyncsnn.hooks import Hook
from asyncsnn.metrics import decision_latency
from asyncsnn.scheduling import Momentum
from asyncsnn.training import TrainConfig

SMALL = ["--limit-train", "40", "--limit-test", "10", "--epochs", "1", "--hidden", "12"]
SMALL += ["--timesteps", "6", "--batch-size", "32", "-q"]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("explore")
    r = CliRunner().invoke(main, ["train", "--out", str(d / "run"), *SMALL])
    assert r.exit_code == 0, r.output
    out = d / "page.html"
    r = CliRunner().invoke(main, ["explore", str(d / "run"), "--sample", "3", "--out", str(out)])
    assert r.exit_code == 0, r.output
    return d / "run", out


def _data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_page_is_self_contained_and_holds_the_recorded_figures(page_file):
    from asyncsnn.explore import record_run
    from asyncsnn.training import load_run

    run, out = page_file
    html = out.read_text()
    assert not re.search(r'(src|href)\s*=\s*["\']?https?://', html)
    data = _data(html)
    assert data == json.loads(json.dumps(record_run(run, sample=3)))
    n_pops = len(load_run(run)[0].populations)
    assert [e["execution"] for e in data["executions"]] == ["layered", "async"]
    for e in data["executions"]:
        assert e["rows"][-1]["counts"] == e["output_counts"]
        assert e["rows"][-1]["run_steps"] == sum(e["forward_steps"])
        per_t = [sum(r["t"] == t for r in e["rows"]) for t in range(data["timesteps"])]
        if e["execution"] == "async":
            assert all(r["group_size"] <= e["F"] for r in e["rows"])
            assert per_t == [s + 1 for s in e["forward_steps"]]
        else:
            assert per_t == [n_pops] * data["timesteps"]


@pytest.mark.parametrize("name", ["h<!--<script>x", "h</script><b>", "a&amp;b"])
def test_a_population_name_cannot_end_or_change_the_data_script(name):
    """A name is any text (NIR names nodes freely): in the embedded JSON every ``<``, ``>`` and
    ``&`` is a JSON escape, so the page keeps its two scripts and reads the same values."""
    net = Network((4,))
    net.add_population(name, [nn.Linear(4, 3)], tau_m=1.0, threshold=0.5)
    x = (torch.rand(3, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    data = explore_data(net, x, TrainConfig(dt=1e-3), ["layered", "async-fifo:2"])
    html = page(data)
    assert html.count("<script") == 2 and html.count("</script>") == 2
    assert "<!--" not in html
    body = re.search(r'id="explore-data">(.*?)</script>', html, re.S).group(1)
    assert not set("<>&") & set(body)
    assert json.loads(body) == json.loads(json.dumps(data))
    assert json.loads(body)["layers"][1]["name"] == name


def test_bad_sample_is_a_clear_error(page_file):
    run, out = page_file
    r = CliRunner().invoke(main, ["explore", str(run), "--sample", "999", "--out", str(out)])
    assert r.exit_code != 0 and "out of range" in r.output


# ------------------------------------------------------------------ a small network of our own
DT = 1e-3
THETA = 0.5


def _net(readout: str = "spikes", reset: str = "zero", seed: int = 22):
    """16 inputs, 12 hidden, 4 outputs, weights that let classes 2 and 1 race; and 6
    timesteps of input events."""
    g = torch.Generator().manual_seed(seed)
    l1, l2 = nn.Linear(16, 12), nn.Linear(12, 4)
    with torch.no_grad():
        l1.weight.copy_(torch.rand(12, 16, generator=g) * 0.7 - 0.2)
        l1.bias.zero_()
        l2.weight.copy_(torch.rand(4, 12, generator=g) * 0.4 - 0.25)
        l2.weight[2] += 0.12
        l2.weight[1] += 0.08
        l2.bias.zero_()
    net = Network.sequential([l1, l2], threshold=THETA, tau_m=1e-3, readout=readout, reset=reset)
    x = (torch.rand(6, 16, generator=g) < 0.35).float()
    return net, x, (l1, l2)


class Probe(Hook):
    """What the tests read of every step, independently of the explorer's monitor."""

    def start(self, ctx):
        ctx.state(self)["rows"] = []

    def after_step(self, ctx):
        queued = group = None
        if ctx.pending is not None:
            queued = set(ctx.place_neuron[ctx.pending[0]].tolist())
            group = set()
            if ctx.chosen is not None:
                group = set(ctx.place_neuron[ctx.chosen[0][ctx.chosen_valid[0]]].tolist())
        ctx.state(self)["rows"].append(
            {
                "t": ctx.timestep,
                "step": int(ctx.steps[0]),
                "pending": int(ctx.pending[0].sum()) if ctx.pending is not None else None,
                "delivered": int(ctx.chosen_valid[0].sum()) if ctx.chosen is not None else 0,
                "queued": queued,
                "group": group,
                "fired": ctx.fired[0].clone(),
                "v": ctx.membrane[0].clone(),
            }
        )

    def finish(self, ctx):
        ctx.records["probe"] = ctx.state(self)["rows"]


def _unique_argmax(counts: list[float]) -> int:
    m = max(counts)
    return counts.index(m) if counts.count(m) == 1 else -1


def _layered_by_hand(layers, x):
    """Layered execution of the two-layer chain, written out: the spikes and the end
    membranes of each population at every timestep."""
    beta = decay_factor(DT, torch.tensor(1e-3))
    V = [torch.zeros(12), torch.zeros(4)]
    out = []
    for t in range(x.shape[0]):
        s = x[t]
        step = []
        for i, layer in enumerate(layers):
            v = beta * V[i] + layer(s)
            s = (v > THETA).float()
            V[i] = torch.where(s > 0, torch.zeros_like(v), v)
            step.append((s.clone(), V[i].clone()))
        out.append(step)
    return out


def _expected(net, x, layers, label, cfg):
    """The frames an execution's panel must show, from asyncsnn's own run (RunResult, an
    OutputTrace, decision_latency) and, layered, from the execution written out by hand."""
    how = Execution.parse(label)
    sched = Momentum(cfg.lambda_ms) if how.scheduler == "momentum" else how.scheduler
    with torch.no_grad():
        r = asyncsnn.run(
            net,
            x[:, None],
            dt=DT,
            execution=how.execution,
            scheduler=sched,
            group_size=how.group_size,
            seed=0,
            max_queued_per_neuron=cfg.max_queued_per_neuron,
            hooks=[Probe(), OutputTrace()],
            backend="torch",
        )
    trace, probe = r.records["output_trace"], r.records["probe"]
    T = x.shape[0]
    frames = [[] for _ in range(T)]
    if how.execution == "async":
        assert len(probe) == int(r.forward_steps.sum()) + T  # a frame per step and delivery
        for row, p in enumerate(probe):
            fired = {
                "hidden1": set(torch.nonzero(p["fired"][:12]).flatten().tolist()),
                "output": set(torch.nonzero(p["fired"][12:16]).flatten().tolist()),
            }
            frames[p["t"]].append(
                {
                    "t": p["t"],
                    "step": p["step"],
                    "of": int(r.forward_steps[p["t"], 0]),
                    "run": int(trace["forward_steps"][row, 0]),
                    "queued": str(p["pending"]),
                    "group": str(p["delivered"]),
                    "spikes": int(trace["network_spikes"][row, 0]),
                    "counts": [int(c) for c in trace["counts"][row, 0].tolist()],
                    "fired": fired,
                    "queued_cells": p["queued"],
                    "group_cells": p["group"],
                    "v": {"hidden1": p["v"][:12], "output": p["v"][12:16]},
                }
            )
        for t in range(T):
            assert [f["step"] for f in frames[t]] == list(range(int(r.forward_steps[t, 0]) + 1))
            assert frames[t][-1]["queued"] == "0"  # a timestep ends with an empty queue
        # every spike of the hidden layer was delivered in some group, none twice
        assert sum(p["delivered"] for p in probe) == int(r.population_spikes("hidden1").sum())
    else:
        hand = _layered_by_hand(layers, x)
        assert torch.equal(r.spikes[:, 0], torch.stack([torch.cat([a[0], b[0]]) for a, b in hand]))
        assert r.forward_steps[:, 0].tolist() == [1] * T
        before = [0] * 4
        spikes = 0
        for t in range(T):
            (s1, v1), (s2, v2) = hand[t]
            prev_v2 = hand[t - 1][1][1] if t else torch.zeros(4)
            after = [int(c) for c in trace["counts"][t, 0].tolist()]
            for i, (name, s) in enumerate((("hidden1", s1), ("output", s2))):
                spikes += int(s.sum())
                frames[t].append(
                    {
                        "t": t,
                        "step": i,
                        "of": 1,
                        "run": t + i,
                        "queued": "\u2014",
                        "group": "\u2014",
                        "spikes": spikes,
                        "counts": after if i == 1 else before,
                        "fired": {
                            "hidden1": set(torch.nonzero(s1).flatten().tolist())
                            if i == 0
                            else set(),
                            "output": set(torch.nonzero(s2).flatten().tolist())
                            if i == 1
                            else set(),
                        },
                        "queued_cells": set(),
                        "group_cells": set(),
                        "v": {"hidden1": v1, "output": v2 if i == 1 else prev_v2},
                        "updated": f"population {name} updated",
                    }
                )
            assert spikes == int(trace["network_spikes"][t, 0])
            before = after
        assert [int(c) for c in r.output_counts[0].tolist()] == before
    # the decision: the final prediction, and the moment from which the counts lead with it
    pred = int(r.prediction[0])
    flat = [f for ft in frames for f in ft]
    assert flat[-1]["counts"] == [int(c) for c in r.output_counts[0].tolist()]
    hits = [_unique_argmax(f["counts"]) == pred for f in flat]
    first = next((i for i in range(len(flat)) if all(hits[i:])), None)
    lat = decision_latency(trace, r.prediction)
    return {
        "frames": frames,
        "total_spikes": int(r.spike_count[0]),
        "decision": pred,
        "first_decided": first,
        "latency_steps": float(lat["latency_steps"][0]),
        "latency_spikes": float(lat["latency_spikes"][0]),
    }


EXECUTIONS = ["layered", "async-momentum:4", "async-random:3"]


def test_monitor_changes_nothing():
    """A run with the explorer's monitor gives the spikes, forward steps, counts and
    membranes of a run without it; the monitor runs on the reference engine (the compiled
    kernel refuses hooks it does not know), equal to the kernel's run without it."""
    for readout, reset in (("spikes", "zero"), ("membrane", "subtract")):
        net, x, _ = _net(readout, reset)
        x = torch.stack([x, x.flip(0), x.roll(3, 1)], 1)  # a batch of three
        for execution, scheduler in (
            ("layered", "random"),
            ("async", "random"),
            ("async", "momentum"),
        ):
            kw = dict(dt=DT, execution=execution, scheduler=scheduler, group_size=3, seed=5)
            with torch.no_grad():
                plain = asyncsnn.run(net, x, backend="torch", **kw)
                watched = asyncsnn.run(net, x, hooks=[ExploreMonitor()], **kw)
                runs = [plain]
                if execution == "async":
                    runs.append(asyncsnn.run(net, x, backend="numba", **kw))
                    with pytest.raises(ValueError, match="ExploreMonitor"):
                        asyncsnn.run(net, x, hooks=[ExploreMonitor()], backend="numba", **kw)
            for other in runs:
                for name in ("spikes", "forward_steps", "output_counts", "synops", "undelivered"):
                    assert torch.equal(getattr(watched, name), getattr(other, name)), name
                assert (watched.membrane is None) == (readout == "spikes")
                if readout == "membrane":
                    assert torch.equal(watched.membrane, other.membrane)
            assert int(watched.spikes.sum()) > 0
            # what it recorded: sample 0's frames, as many as its steps
            rows = watched.records["explore"]
            per_t = [sum(r["t"] == t for r in rows) for t in range(x.shape[0])]
            if execution == "async":
                assert per_t == [int(s) + 1 for s in plain.forward_steps[:, 0]]
            else:
                assert per_t == [2] * x.shape[0]
            assert rows[-1]["run_steps"] == int(plain.forward_steps[:, 0].sum())
            assert rows[-1]["counts"] == [int(c) for c in plain.output_counts[0].tolist()]


def test_membrane_readout_decides_at_the_end():
    net, x, _ = _net("membrane")
    cfg = TrainConfig(dt=DT)
    how = Execution.parse("async-random:3")
    e = record(net, x, cfg, how)
    with torch.no_grad():
        r = asyncsnn.run(net, x[:, None], dt=DT, scheduler="random", group_size=3, seed=0)
    assert e["readout"] == "membrane" and e["settled_row"] is None
    assert e["decision"] == int(r.prediction[0]) >= 0


# ------------------------------------------------------------------ the page in a browser
def _driver():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        chromium = None
    if not (chromium and driver):
        msg = "Chromium, chromedriver or selenium not found"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must install them")
        pytest.skip(msg)
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


# what the page shows, read out of the DOM by element ids
_READ = """
const w=document.getElementById('where').dataset, out=[];
function timeline(i){const cur=+document.getElementById(`e${i}-cursor`).dataset.row;
 const band=document.querySelector(`#e${i}-predicted rect[data-row="${cur}"]`);
 const settle=document.getElementById(`e${i}-settle`);
 const spikes=[...document.querySelectorAll(`#e${i}-raster .spike`)];
 return {cursor:cur,predicted:+band.dataset.predicted,
  settled:settle?+settle.dataset.row:null,
  lines:document.querySelectorAll(`#e${i}-timeline path.count`).length,
  past:spikes.filter(c=>c.classList.contains('past')).length,all:spikes.length,
  now:spikes.filter(c=>c.classList.contains('now')).map(c=>[c.dataset.layer,+c.dataset.neuron])};}
document.querySelectorAll('.panel').forEach(p=>{const i=p.dataset.index;
 const g=n=>document.getElementById(`e${i}-${n}`).textContent;
 const d=document.getElementById(`e${i}-decision`).dataset, layers={};
 p.querySelectorAll('.grid').forEach(G=>{const c=[...G.children];
  const has=n=>c.flatMap((x,j)=>x.classList.contains(n)?[j]:[]);
  layers[G.dataset.layer]={fired:has('fired'),queued:has('queued'),group:has('group'),
   v:c.map(x=>x.dataset.v===undefined?null:Number(x.dataset.v))};});
 out.push({t:+g('timestep'),step:+g('step'),of:+g('of'),run:+g('run-steps'),
  queued:g('queued'),group:g('group'),spikes:+g('spikes'),updated:g('updated'),
  counts:[...document.getElementById(`e${i}-counts`).children].map(s=>+s.textContent),
  decided:d.decided,settledSteps:d.settledSteps,settledSpikes:d.settledSpikes,
  held:g('held')!=='',layers,timeline:timeline(i)});});
return {t:+w.t,k:+w.k,scrub:+document.getElementById('scrub').value,panels:out};
"""


def _check(shown, want, label):
    for key in ("t", "step", "of", "run", "queued", "group", "spikes", "counts"):
        assert shown[key] == want[key], (label, key, shown[key], want[key])
    assert shown["updated"] == want.get("updated", ""), label
    L = shown["layers"]
    for name in ("hidden1", "output"):
        assert set(L[name]["fired"]) == want["fired"][name], (label, name)
        v = torch.tensor(L[name]["v"], dtype=torch.float32)
        assert torch.allclose(v, want["v"][name], atol=6e-4, rtol=0), (label, name)
    offsets = {"input": 0, "hidden1": 16, "output": 28}
    for cls in ("queued", "group"):
        cells = {offsets[n] + j for n, o in L.items() for j in o[cls]}
        assert cells == want[cls + "_cells"], (label, cls)
    assert L["input"]["fired"] == [] and all(v is None for v in L["input"]["v"])


def test_page_in_a_browser_step_by_step(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    net, x, layers = _net()
    cfg = TrainConfig(dt=DT)
    want = [_expected(net, x, layers, label, cfg) for label in EXECUTIONS]
    for w in want:  # the run decides, and not only at its last frame
        assert w["decision"] >= 0 and not math.isnan(w["latency_steps"])
        assert w["first_decided"] < sum(len(f) for f in w["frames"]) - 1
    out = tmp_path / "page.html"
    out.write_text(page(explore_data(net, x, cfg, EXECUTIONS, sample=7, target=2)))
    T = x.shape[0]
    b = _driver()
    try:
        b.get(out.as_uri())
        panels = b.find_elements(By.CSS_SELECTOR, ".panel")
        assert len(panels) == len(EXECUTIONS)
        # every frame, in order: next step walks each timestep as far as its longest panel
        seen = [0] * len(EXECUTIONS)
        for t in range(T):
            n = max(len(w["frames"][t]) for w in want)
            for k in range(n):
                if (t, k) != (0, 0):
                    b.find_element(By.ID, "next").click()
                shown = b.execute_script(_READ)
                assert (shown["t"], shown["k"]) == (t, k)
                for i, w in enumerate(want):
                    ft = w["frames"][t]
                    f = ft[min(k, len(ft) - 1)]
                    s = shown["panels"][i]
                    _check(s, f, (EXECUTIONS[i], t, k))
                    assert s["held"] == (k >= len(ft))
                    index = sum(len(w["frames"][u]) for u in range(t)) + min(k, len(ft) - 1)
                    seen[i] += k < len(ft)
                    # the timeline: the cursor at the frame, the predicted class of its
                    # counts, the settling frame; the raster: the spikes so far, the frame's own
                    tl = s["timeline"]
                    assert tl["cursor"] == index and tl["lines"] == 4
                    assert tl["predicted"] == _unique_argmax(f["counts"])
                    assert tl["settled"] == w["first_decided"]
                    assert tl["past"] == f["spikes"] and tl["all"] == w["total_spikes"]
                    now = {(n, j) for n, js in f["fired"].items() for j in js}
                    assert {tuple(x) for x in tl["now"]} == now
                    decided = index >= w["first_decided"]
                    assert s["decided"] == (str(w["decision"]) if decided else "")
                    if decided:  # the moment it settled, in decision_latency's figures
                        assert float(s["settledSteps"]) == w["latency_steps"]
                        assert float(s["settledSpikes"]) == w["latency_spikes"]
        assert seen == [sum(len(f) for f in w["frames"]) for w in want]  # no frame skipped
        # at the end: stepping further changes nothing; every panel has decided
        b.find_element(By.ID, "next").click()
        end = b.execute_script(_READ)
        assert (end["t"], end["k"]) == (T - 1, max(len(w["frames"][-1]) for w in want) - 1)
        for s, w in zip(end["panels"], want, strict=True):
            assert s["counts"] == w["frames"][-1][-1]["counts"]
            assert s["decided"] == str(w["decision"])
            assert float(s["settledSteps"]) == w["latency_steps"]
        b.find_element(By.ID, "prev").click()
        assert b.execute_script(_READ)["k"] == end["k"] - 1
        # next timestep from the start, and back across the timestep's boundary
        b.refresh()
        b.find_element(By.ID, "next-t").click()
        shown = b.execute_script(_READ)
        assert (shown["t"], shown["k"]) == (1, 0)
        for s, w in zip(shown["panels"], want, strict=True):
            _check(s, w["frames"][1][0], "next-t")
        b.find_element(By.ID, "prev").click()
        shown = b.execute_script(_READ)
        assert (shown["t"], shown["k"]) == (0, max(len(w["frames"][0]) for w in want) - 1)
        b.find_element(By.ID, "play").click()
        assert b.find_element(By.ID, "play").text == "pause"
        b.find_element(By.ID, "play").click()
        assert b.find_element(By.ID, "play").text == "play"
        # the slider scrubs to any frame; the keys step, jump a timestep and to either end
        frames = [(t, k) for t in range(T) for k in range(max(len(w["frames"][t]) for w in want))]
        for j in (len(frames) - 1, 3, 0, len(frames) // 2):
            b.execute_script(
                "const s=document.getElementById('scrub');s.value=arguments[0];"
                "s.dispatchEvent(new Event('input'));",
                j,
            )
            shown = b.execute_script(_READ)
            assert (shown["t"], shown["k"]) == frames[j] and shown["scrub"] == j
            t, k = frames[j]
            for s, w in zip(shown["panels"], want, strict=True):
                ft = w["frames"][t]
                _check(s, ft[min(k, len(ft) - 1)], ("scrub", j))
        body = b.find_element(By.TAG_NAME, "body")
        for key, j in (
            (Keys.HOME, 0),
            (Keys.ARROW_RIGHT, 1),
            (Keys.ARROW_LEFT, 0),
            (Keys.END, len(frames) - 1),
        ):
            body.send_keys(key)
            assert b.execute_script(_READ)["scrub"] == j, key
        body.send_keys(Keys.HOME)
        body.send_keys("t")
        assert (b.execute_script(_READ)["t"], b.execute_script(_READ)["k"]) == (1, 0)
        body.send_keys(" ")
        assert b.find_element(By.ID, "play").text == "pause"
        body.send_keys(" ")
        assert b.find_element(By.ID, "play").text == "play"
        # the screenshot shows the timelines: each holds its class lines, predicted band,
        # settling mark and cursor, in colour, where the page draws it
        b.set_window_size(1500, 1100)
        b.execute_script("window.scrollTo(0,0)")
        shot = tmp_path / "page.png"
        b.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        if os.environ.get("ASYNCSNN_EXPLORE_SHOT"):  # to look at it
            shutil.copy(shot, os.environ["ASYNCSNN_EXPLORE_SHOT"])
        _timelines_in(b, want, tmp_path)
        b.find_element(By.CSS_SELECTOR, "#execution option[value='1']").click()
        panels = b.find_elements(By.CSS_SELECTOR, ".panel")  # those of the reloaded page
        assert [p.is_displayed() for p in panels] == [False, True, False]
    finally:
        b.quit()


def _timelines_in(browser, want, folder) -> None:
    """Each panel's timeline, as the browser draws it (an element screenshot), shows the
    orange cursor, the black settling mark and the decided class's colour (its count line
    and the predicted band)."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]
    timelines = browser.find_elements(By.CSS_SELECTOR, ".timeline")
    assert len(timelines) == len(want)
    for i, (element, w) in enumerate(zip(timelines, want, strict=True)):
        assert element.size["width"] > 300 and element.size["height"] > 100
        path = folder / f"timeline{i}.png"
        element.screenshot(str(path))
        image = Image.open(path).convert("RGB")
        colours = {c for _, c in image.getcolors(1 << 24)}
        assert (255, 153, 0) in colours  # the cursor, #f90
        assert (0, 0, 0) in colours  # the settling mark
        assert palette[w["decision"]] in colours
