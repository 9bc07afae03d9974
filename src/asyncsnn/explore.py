"""``asyncsnn explore``: a self-contained HTML page that steps through the forward steps of
one sample, layered and asynchronous side by side.

:class:`ExploreMonitor` records, after the input delivery and every forward step of the
reference engine, the spikes, the queue, the group the policy chose, the membranes and the
running output counts. :class:`~asyncsnn.hooks.StepContext` exposes the spikes and the
counts; the queue, the group and the membranes are not on it, so the monitor reads them
(read-only) from the engine's timestep state. :func:`page` writes the page: inline script,
style and data (a JSON block), nothing fetched from the network.
"""

from __future__ import annotations

import json
import math

import torch

from .hooks import Hook, StepContext
from .metrics import settled_rows
from .result import predict

__all__ = ["ExploreMonitor", "record", "record_run", "page"]


class ExploreMonitor(Hook):
    """Records one row per input delivery and forward step (sample 0 of the batch) in
    ``records["explore"]``; it returns no stop decision and changes nothing."""

    def start(self, ctx: StepContext) -> None:
        ctx.state(self)["rows"] = []

    def after_step(self, ctx: StepContext) -> None:
        net = ctx.network
        n_in = net.n_input
        row = {
            "t": int(ctx.timestep),
            "step": int(ctx.step),
            "steps": int(ctx.steps[0]),
            "counts": [int(v) for v in ctx.output_counts[0].detach().round().tolist()],
            "network_spikes": int(ctx.network_spikes[0].detach()),
        }
        fired = ctx.fired[0].detach() if ctx.fired is not None else None
        membrane = ctx.membrane[0] if ctx.membrane is not None else None
        queue = group = None
        if ctx.pending is not None:  # asynchronous execution
            neuron = ctx.place_neuron
            queue = neuron[ctx.pending[0]].tolist()
            group = []
            if ctx.chosen is not None:
                group = neuron[ctx.chosen[0][ctx.chosen_valid[0]]].tolist()
        pops = {}
        for p in net.populations:
            a, b = p.offset - n_in, p.offset - n_in + p.size
            entry = {}
            if fired is not None:
                entry["fired"] = torch.nonzero(fired[a:b]).flatten().tolist()
            if membrane is not None:
                entry["v"] = [round(float(v), 3) for v in membrane[a:b].tolist()]
            if queue is not None:
                entry["queued"] = [i - p.offset for i in queue if p.offset <= i < p.offset + p.size]
                entry["group"] = [i - p.offset for i in group if p.offset <= i < p.offset + p.size]
            pops[p.name] = entry
        if queue is not None:
            pops["input"] = {
                "queued": [i for i in queue if i < n_in],
                "group": [i for i in group if i < n_in],
            }
            row["queued"] = len(queue)
            row["group_size"] = len(group)
        row["layers"] = pops
        ctx.state(self)["rows"].append(row)

    def finish(self, ctx: StepContext) -> None:
        ctx.records["explore"] = ctx.state(self)["rows"]


def _settled(rows: list[dict]) -> tuple[int | None, int | None]:
    """The decided class (a unique maximum of the final counts) and the first row from
    which it leads alone to the end (the rule of :func:`asyncsnn.metrics.settled_rows`)."""
    counts = torch.tensor([r["counts"] for r in rows], dtype=torch.float32)[:, None, :]
    c = int(predict(counts[-1])[0])
    if c < 0 or counts[-1, 0, c] <= 0:
        return None, None
    # counts only grow: a suffix of rows leads with a count above 0 (one output included)
    leads = settled_rows(counts, torch.tensor([c]))[:, 0] & (counts[:, 0, c] > 0)
    return c, int(leads.long().argmax())


def record(net, x: torch.Tensor, cfg, how, *, seed: int = 0) -> dict:
    """The figures of one sample ``x`` (timesteps, *input) under ``how`` (an
    :class:`~asyncsnn.evaluation.Execution`), run by the reference engine."""
    from .scheduling import Momentum
    from .training import forward

    scheduler = Momentum(cfg.lambda_ms) if how.scheduler == "momentum" else how.scheduler
    with torch.no_grad():
        r = forward(
            net,
            x[None],
            cfg,
            training=False,
            seed=seed,
            execution=how.execution,
            scheduler=scheduler,
            group_size=how.group_size,
            hooks=[ExploreMonitor()],
            backend="torch",
        )
    rows = r.records["explore"]
    decided, settled = _settled(rows)
    return {
        "label": how.label,
        "execution": how.execution,
        "F": how.group_size if how.execution == "async" else None,
        "forward_steps": [int(v) for v in r.forward_steps[:, 0].tolist()],
        "output_counts": [int(v) for v in r.output_counts[0].round().tolist()],
        "spikes": {p.name: int(r.population_spikes(p.name)[:, 0].sum()) for p in net.populations},
        "decision": decided,
        "settled_row": settled,
        "rows": rows,
    }


def _grid(size: int) -> int:
    return max(1, math.ceil(math.sqrt(size)))


def record_run(run_dir, *, sample: int = 0, executions=None, seed: int = 0, which="best"):
    """The page's data for test sample ``sample`` of a run directory."""
    from .evaluation import Execution
    from .training import load_run, load_test_split

    net, cfg, facts = load_run(run_dir, which)
    test = load_test_split(cfg)
    if not 0 <= sample < len(test):
        raise ValueError(
            f"sample {sample} is out of range: the test split has {len(test)} samples "
            f"(0..{len(test) - 1})"
        )
    hows = [Execution.parse(e) for e in (executions or ["layered", "async-momentum"])]
    x = test.x[sample]
    layers = [{"name": "input", "size": net.n_input, "cols": _grid(net.n_input)}]
    for p in net.populations:
        a = p.offset - net.n_input
        theta = float(net.threshold[a : a + p.size].max())
        layers.append({"name": p.name, "size": p.size, "cols": _grid(p.size), "theta": theta})
    events = [torch.nonzero(x[t].reshape(-1)).flatten().tolist() for t in range(x.shape[0])]
    return {
        "sample": sample,
        "target": int(test.y[sample]),
        "timesteps": int(x.shape[0]),
        "layers": layers,
        "input_events": events,
        "executions": [record(net, x, cfg, h, seed=seed) for h in hows],
    }


_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>asyncsnn explore</title>
<style>
body{font-family:sans-serif;margin:1em;background:#fafafa}
#panels{display:flex;gap:1.5em;flex-wrap:wrap}
.panel{border:1px solid #ccc;padding:.5em;background:#fff}
.grid{display:grid;gap:1px;margin:.2em 0 .6em}
.n{width:12px;height:12px;border:1px solid #ddd;box-sizing:border-box}
.n.event{background:#333}.n.queued{border:2px dotted #06c}
.n.group{border:2px solid #0a0}.n.fired{outline:2px solid #f90}
.counts span{display:inline-block;min-width:1.6em;text-align:center;border:1px solid #ccc}
.counts span.lead{background:#fd6}
</style></head><body>
<h1>asyncsnn explore: sample __SAMPLE__</h1>
<div id="controls">
<button id="prev">previous step</button><button id="next">next step</button>
<button id="next-t">next timestep</button><button id="play">play</button>
<select id="execution"><option value="all">all executions</option></select>
<span id="where"></span></div>
<div id="panels"></div>
<script type="application/json" id="explore-data">__DATA__</script>
<script>
const D=JSON.parse(document.getElementById('explore-data').textContent);
let t=0,k=0,timer=null;
const panels=document.getElementById('panels'),sel=document.getElementById('execution');
function rowsOf(e,t){return e.rows.filter(r=>r.t===t);}
function colour(v,th){const a=Math.max(-1,Math.min(1,v/(th||1)));
 return a>=0?`rgb(255,${255-200*a|0},${255-200*a|0})`:`rgb(${255+200*a|0},${255+200*a|0},255)`;}
D.executions.forEach((e,i)=>{const o=document.createElement('option');o.value=i;
 o.textContent=e.label;sel.appendChild(o);
 const p=document.createElement('div');p.className='panel';p.dataset.index=i;
 p.innerHTML=`<h2>${e.label}</h2><div class="info"></div>`;
 D.layers.forEach(L=>{const h=document.createElement('div');h.textContent=L.name;
  const g=document.createElement('div');g.className='grid';g.dataset.layer=L.name;
  g.style.gridTemplateColumns=`repeat(${L.cols},12px)`;
  for(let j=0;j<L.size;j++){const c=document.createElement('div');c.className='n';g.appendChild(c);}
  p.appendChild(h);p.appendChild(g);});
 const c=document.createElement('div');c.className='counts';p.appendChild(c);
 panels.appendChild(p);});
function maxSteps(){return Math.max(...D.executions.map(e=>rowsOf(e,t).length));}
function draw(){document.getElementById('where').textContent=`timestep ${t} step ${k}`;
 D.executions.forEach((e,i)=>{const p=panels.children[i],rs=rowsOf(e,t);
  const ri=Math.min(k,rs.length-1),r=rs[ri],idx=e.rows.indexOf(r);
  const settled=e.settled_row!==null&&idx>=e.settled_row;
  const info=p.querySelector('.info');
  info.innerHTML=`<span class="t">${r.t}</span> / step <span class="step">${r.step}</span>`+
   ` of <span class="steps">${e.forward_steps[t]}</span> forward steps; queued `+
   `<span class="queued">${r.queued??0}</span>; group `+
   `<span class="group-size">${r.group_size??0}</span>`+
   `; network spikes <span class="spikes">${r.network_spikes}</span>; `+
   `<span class="decision">${settled?'decided: '+e.decision:'undecided'}</span>`;
  D.layers.forEach(L=>{const cells=p.querySelector(`.grid[data-layer="${L.name}"]`).children;
   const s=r.layers[L.name]||{};const sets={};
   ['fired','queued','group'].forEach(n=>sets[n]=new Set(s[n]||[]));
   const ev=L.name==='input'?new Set(D.input_events[t]):null;
   for(let j=0;j<cells.length;j++){const c=cells[j];
    c.className='n'+(ev&&ev.has(j)?' event':'')+
     ['fired','queued','group'].map(n=>sets[n].has(j)?' '+n:'').join('');
    if(s.v)c.style.background=colour(s.v[j],L.theta);}});
  const m=Math.max(...r.counts);
  p.querySelector('.counts').innerHTML='output counts: '+r.counts.map(
   v=>`<span class="${v===m&&v>0?'lead':''}">${v}</span>`).join('');});}
function next(){if(k<maxSteps()-1)k++;else if(t<D.timesteps-1){t++;k=0;}else stop();draw();}
function stop(){if(timer){clearInterval(timer);timer=null;}
 document.getElementById('play').textContent='play';}
document.getElementById('next').onclick=next;
document.getElementById('prev').onclick=()=>{if(k>0)k--;else if(t>0){t--;k=maxSteps()-1;}draw();};
document.getElementById('next-t').onclick=()=>{if(t<D.timesteps-1){t++;k=0;}draw();};
document.getElementById('play').onclick=()=>{if(timer)stop();else{timer=setInterval(next,200);
 document.getElementById('play').textContent='pause';}};
sel.onchange=()=>{[...panels.children].forEach((p,i)=>{p.style.display=
 (sel.value==='all'||sel.value==String(i))?'':'none';});};
draw();
</script></body></html>
"""


def page(data: dict) -> str:
    """The HTML page of ``data`` (from :func:`record_run`)."""
    text = json.dumps(data).replace("</", "<\\/")
    return _TEMPLATE.replace("__SAMPLE__", str(int(data["sample"]))).replace("__DATA__", text)
