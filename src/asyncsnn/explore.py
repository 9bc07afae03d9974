"""``asyncsnn explore``: a self-contained HTML page that steps through the forward steps of
one sample, layered and asynchronous side by side.

:class:`ExploreMonitor` records frames of one sample from what
:class:`~asyncsnn.hooks.StepContext` offers: the spikes, the queue, the group the policy
chose, the membranes and the running counts. An asynchronous run gives a frame after its
input delivery and after each of its forward steps. A layered run gives one frame per
population, in network order: layered execution calls its hooks once per timestep, after
all its layers, and the frames of that timestep are derived from what is known then (see
:class:`ExploreMonitor`). The monitor only reads: a run with it gives the spikes, forward
steps, counts and membranes of a run without it (it runs on the reference engine; the
compiled kernel refuses hooks it does not know). :func:`page` writes the page: inline
script, style and data (a JSON block), nothing fetched from the network. Each panel has a
timeline of the running output counts and the predicted class over the frames, marking where
the execution settles on its final answer, and a raster of the spikes by frame; a slider and
the keyboard move through the frames.
"""

from __future__ import annotations

import json
import math

import torch

from .hooks import Hook, StepContext
from .metrics import settled_rows
from .result import predict

__all__ = ["ExploreMonitor", "explore_data", "page", "record", "record_run"]


def _sends(net) -> list[bool]:
    """Whether each population sends spikes (has an outgoing projection)."""
    return [any(q.source == p.name for q in net.projections) for p in net.populations]


class ExploreMonitor(Hook):
    """Records the frames of sample 0 of the batch in ``records["explore"]``, a list of
    dicts; it returns no stop decision and changes nothing.

    Every frame holds the timestep ``t``, the forward step ``step`` within it, the forward
    steps ``run_steps`` since the start of the run, the running ``counts`` of the outputs
    and ``network_spikes``, and per population the neurons that ``fired`` in the frame and
    the membranes ``v`` (rounded to 3 decimals).

    Asynchronous execution: a frame after the input delivery (``step`` 0) and after each
    forward step of sample 0; per population (and the input) also the ``queued`` neurons
    and the ``group`` delivered, and their numbers ``queued`` and ``group_size``.

    Layered execution: one frame per population, the populations in network order (frame
    ``i`` is population ``i``'s update, named in ``updated``). Frame ``i`` comes after as
    many forward steps as there are spike-sending populations before ``i`` (a feed-forward
    chain: ``i``); only population ``i`` fires in it; populations ``0..i`` show their
    membranes at the timestep's end (each is updated once per timestep, and nothing
    changes it afterwards), the later ones their membranes at the previous timestep's end
    (their leak and input come at their own update); the output counts change at the
    output's frame, the last. There is no queue and no group.
    """

    def start(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        state.update(rows=[], base=0, prev_v=None)

    def after_step(self, ctx: StepContext) -> None:
        if ctx.pending is None:
            self._layered(ctx)
        else:
            self._async(ctx)

    def _async(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        rows = state["rows"]
        if ctx.step == 0:
            state["base"] = rows[-1]["run_steps"] if rows else 0
        elif not bool(ctx.took_step[0]):  # another sample of the batch took this step
            return
        net, n_in = ctx.network, ctx.network.n_input
        steps = int(ctx.steps[0])
        neuron = ctx.place_neuron
        queue = neuron[ctx.pending[0]].tolist()
        group = [] if ctx.chosen is None else neuron[ctx.chosen[0][ctx.chosen_valid[0]]].tolist()
        fired = ctx.fired[0].detach()
        membrane = ctx.membrane[0]
        layers = {
            "input": {
                "queued": [i for i in queue if i < n_in],
                "group": [i for i in group if i < n_in],
            }
        }
        for p in net.populations:
            a, b = p.offset - n_in, p.offset - n_in + p.size
            layers[p.name] = {
                "fired": torch.nonzero(fired[a:b]).flatten().tolist(),
                "v": _rounded(membrane[a:b]),
                "queued": [i - p.offset for i in queue if p.offset <= i < p.offset + p.size],
                "group": [i - p.offset for i in group if p.offset <= i < p.offset + p.size],
            }
        rows.append(
            {
                "t": int(ctx.timestep),
                "step": steps,
                "run_steps": state["base"] + steps,
                "counts": _counts(ctx.output_counts[0]),
                "network_spikes": int(ctx.network_spikes[0].detach().round()),
                "queued": len(queue),
                "group_size": len(group),
                "layers": layers,
            }
        )

    def _layered(self, ctx: StepContext) -> None:
        state = ctx.state(self)
        net, n_in = ctx.network, ctx.network.n_input
        pops = net.populations
        fired = ctx.fired[0].detach()
        membrane = ctx.membrane[0]
        prev = state["prev_v"]
        if prev is None:  # every membrane starts at zero
            prev = torch.zeros_like(membrane)
        cols = [slice(p.offset - n_in, p.offset - n_in + p.size) for p in pops]
        fired_n = [int(fired[c].sum()) for c in cols]
        spikes = int(ctx.network_spikes[0].detach().round()) - sum(fired_n)
        end_counts = ctx.output_counts[0].detach()
        before = _counts(end_counts - ctx.output_spikes[0].detach())
        sends = _sends(net)
        step = 0
        for i, p in enumerate(pops):
            spikes += fired_n[i]
            last = i == len(pops) - 1
            layers = {"input": {}}
            for j, (q, c) in enumerate(zip(pops, cols, strict=True)):
                layers[q.name] = {
                    "fired": torch.nonzero(fired[c]).flatten().tolist() if j == i else [],
                    "v": _rounded(membrane[c] if j <= i else prev[c]),
                }
            state["rows"].append(
                {
                    "t": int(ctx.timestep),
                    "step": step,
                    "run_steps": state["base"] + step,
                    "counts": _counts(end_counts) if last else before,
                    "network_spikes": spikes,
                    "updated": p.name,
                    "layers": layers,
                }
            )
            step += sends[i]
        state["base"] += int(ctx.steps_per_row)
        state["prev_v"] = membrane.clone()

    def finish(self, ctx: StepContext) -> None:
        ctx.records["explore"] = ctx.state(self)["rows"]


def _rounded(v: torch.Tensor) -> list[float]:
    return [round(float(x), 3) for x in v.detach().tolist()]


def _counts(c: torch.Tensor) -> list[int]:
    return [int(v) for v in c.detach().round().tolist()]


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
    :class:`~asyncsnn.evaluation.Execution`), run by the reference engine as a batch of one
    with ``seed``."""
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
    if net.output.spiking:
        decided, settled = _settled(rows)
    else:  # a membrane readout decides at the end, by the summed membrane
        c = int(r.prediction[0])
        decided, settled = (c if c >= 0 else None), None
    return {
        "label": how.label,
        "execution": how.execution,
        "F": how.group_size if how.execution == "async" else None,
        "readout": "spikes" if net.output.spiking else "membrane",
        "forward_steps": [int(v) for v in r.forward_steps[:, 0].tolist()],
        "output_counts": _counts(r.output_counts[0]),
        "spikes": {p.name: int(r.population_spikes(p.name)[:, 0].sum()) for p in net.populations},
        "decision": decided,
        "settled_row": settled,
        "rows": rows,
    }


def _grid(size: int) -> int:
    return max(1, math.ceil(math.sqrt(size)))


def explore_data(
    net, x: torch.Tensor, cfg, executions, *, sample: int = 0, target=None, seed: int = 0
) -> dict:
    """The page's data for one sample ``x`` (timesteps, *input) of ``net`` under each of
    ``executions`` (:class:`~asyncsnn.evaluation.Execution` objects or their names, e.g.
    ``layered``, ``async-random:4``); ``cfg`` (a :class:`~asyncsnn.training.TrainConfig`)
    gives ``dt`` and the momentum policy's ``lambda_ms``."""
    from .evaluation import Execution

    hows = [e if isinstance(e, Execution) else Execution.parse(e) for e in executions]
    layers = [{"name": "input", "size": net.n_input, "cols": _grid(net.n_input)}]
    for p in net.populations:
        a = p.offset - net.n_input
        theta = float(net.threshold[a : a + p.size].max())
        layers.append({"name": p.name, "size": p.size, "cols": _grid(p.size), "theta": theta})
    events = [torch.nonzero(x[t].reshape(-1)).flatten().tolist() for t in range(x.shape[0])]
    return {
        "sample": int(sample),
        "target": None if target is None else int(target),
        "timesteps": int(x.shape[0]),
        "layers": layers,
        "input_events": events,
        "executions": [record(net, x, cfg, h, seed=seed) for h in hows],
    }


def record_run(run_dir, *, sample: int = 0, executions=None, seed: int = 0, which="best"):
    """The page's data for test sample ``sample`` of a run directory."""
    from .training import load_run, load_test_split

    net, cfg, facts = load_run(run_dir, which)
    test = load_test_split(cfg)
    if not 0 <= sample < len(test):
        raise ValueError(
            f"sample {sample} is out of range: the test split has {len(test)} samples "
            f"(0..{len(test) - 1})"
        )
    return explore_data(
        net,
        test.x[sample],
        cfg,
        executions or ["layered", "async-momentum"],
        sample=sample,
        target=int(test.y[sample]),
        seed=seed,
    )


_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>asyncsnn explore</title>
<style>
body{font-family:sans-serif;margin:1em;background:#fafafa}
#panels{display:flex;gap:1.5em;flex-wrap:wrap}
.panel{border:1px solid #ccc;padding:.5em;background:#fff;max-width:34em}
.caption{font-size:.85em;color:#555;margin:.3em 0}
.grid{display:grid;gap:1px;margin:.2em 0 .6em}
.n{width:12px;height:12px;border:1px solid #ddd;box-sizing:border-box}
.n.event{background:#333}.n.queued{border:2px dotted #06c}
.n.group{border:2px solid #0a0}.n.fired{outline:2px solid #f90}
.counts span{display:inline-block;min-width:1.6em;text-align:center;border:1px solid #ccc}
.counts span.lead{background:#fd6}
.timeline,.raster{display:block;background:#fff;border:1px solid #eee;margin:.3em 0}
.timeline text,.raster text{font-size:9px;fill:#555}
.spike{fill:#ccc}.spike.past{fill:#246}.spike.now{fill:#f90}
#scrub{width:30em;vertical-align:middle}
</style></head><body>
<h1>asyncsnn explore: sample __SAMPLE__</h1>
<div id="controls">
<button id="prev">previous step</button><button id="next">next step</button>
<button id="next-t">next timestep</button><button id="play">play</button>
<select id="execution"><option value="all">all executions</option></select>
<span id="where"></span><br>
<input type="range" id="scrub" min="0" value="0" aria-label="frame">
<span class="caption">keys: &rarr; next step, &larr; previous, t next timestep, space play or
pause, Home and End the first and last frame</span></div>
<p class="caption">Each panel shows one frame at a time: the input's events (filled), the
neurons that fired in the frame (orange outline), the queued spikes (dotted blue) and the
group delivered (solid green), the membranes as colour (red towards the threshold, blue
below zero). <i>next step</i> advances every panel by one frame of the same timestep; a
panel whose timestep has no more frames holds its last one. Under each panel, the
<b>timeline</b> of the whole run: the running output count of every class over the frames
(each timestep's input delivery, then its forward steps), the predicted class below it (the
class with the most output spikes, grey while there is none or a tie), the frame from which
the final answer leads for good (<i>settled</i>, dashed) and the frame shown (the cursor);
and the <b>raster</b>: every spike of every population by frame, those up to the frame shown
in dark blue, the frame's own in orange. The slider scrubs through all frames.</p>
<div id="panels"></div>
<script type="application/json" id="explore-data">__DATA__</script>
<script>
const D=JSON.parse(document.getElementById('explore-data').textContent);
let t=0,k=0,timer=null;
const panels=document.getElementById('panels'),sel=document.getElementById('execution');
const CAPTION={async:'Asynchronous execution: frame 0 is the input delivery (no forward '+
 'step), each further frame one forward step: the group delivered, the spikes it caused, '+
 'the queue and the membranes after it.',
 layered:'Layered execution runs its layers behind a barrier, one population after '+
 'another; each frame is one population\\'s update (named below): its spikes appear at its '+
 'forward step. The populations it has reached show their membranes at this timestep\\'s '+
 'end; the later ones still hold the previous timestep\\'s (their leak and input come at '+
 'their own update). Layered execution has no queue and no group.'};
const byT=D.executions.map(e=>{const a=Array.from({length:D.timesteps},()=>[]);
 e.rows.forEach((r,i)=>a[r.t].push(i));return a;});
function frames(){return Math.max(...byT.map(a=>a[t].length));}
function colour(v,th){const a=Math.max(-1,Math.min(1,v/(th||1)));
 return a>=0?`rgb(255,${255-200*a|0},${255-200*a|0})`:`rgb(${255+200*a|0},${255+200*a|0},255)`;}
function span(i,name){return `<span id="e${i}-${name}"></span>`;}
const SVG='http://www.w3.org/2000/svg',W=460,PAD=28;
const PALETTE=['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2',
 '#7f7f7f','#bcbd22','#17becf'];
function hue(c){return c<0?'#ddd':PALETTE[c%PALETTE.length];}
function el(name,attrs,parent){const x=document.createElementNS(SVG,name);
 for(const k in attrs)x.setAttribute(k,attrs[k]);if(parent)parent.appendChild(x);return x;}
function leader(counts){const m=Math.max(...counts);
 return m>0&&counts.filter(v=>v===m).length===1?counts.indexOf(m):-1;}
function xOf(e,row){const n=Math.max(1,e.rows.length-1);return PAD+row*(W-PAD-8)/n;}
function crisp(x){return Math.round(x)+0.5;}
function timeline(e,i){const H=150,top=8,bottom=100,n=e.rows.length;
 const s=el('svg',{class:'timeline',id:`e${i}-timeline`,width:W,height:H,
  viewBox:`0 0 ${W} ${H}`});
 const top_count=Math.max(1,...e.rows.map(r=>Math.max(...r.counts)));
 const y=v=>bottom-(bottom-top)*v/top_count;
 el('line',{x1:PAD,x2:W-8,y1:bottom,y2:bottom,stroke:'#999'},s);
 el('text',{x:2,y:top+8},s).textContent=top_count;el('text',{x:2,y:bottom},s).textContent='0';
 e.rows[0].counts.forEach((_,c)=>{let d='';e.rows.forEach((r,row)=>{
   d+=(row?`H${xOf(e,row)}V${y(r.counts[c])}`:`M${xOf(e,0)},${y(r.counts[c])}`);});
  el('path',{d,fill:'none',stroke:hue(c),'stroke-width':c===e.decision?2.5:1,
   class:'count','data-class':c},s);});
 const band=el('g',{id:`e${i}-predicted`},s),w=(W-PAD-8)/Math.max(1,n-1);
 e.rows.forEach((r,row)=>{const c=leader(r.counts);
  el('rect',{x:xOf(e,row)-w/2,y:bottom+6,width:Math.max(w,1),height:12,fill:hue(c),
   'data-row':row,'data-predicted':c},band);});
 el('text',{x:2,y:bottom+16},s).textContent='pred.';
 if(e.settled_row!==null){const x=crisp(xOf(e,e.settled_row));
  el('line',{id:`e${i}-settle`,'data-row':e.settled_row,x1:x,x2:x,y1:top,y2:bottom+18,
   stroke:'#000','stroke-dasharray':'4 3'},s);
  el('text',{x:Math.min(x+3,W-110),y:top+8},s).textContent=
   `settled: class ${e.decision} (step ${e.rows[e.settled_row].run_steps})`;}
 el('line',{id:`e${i}-cursor`,'data-row':0,x1:PAD,x2:PAD,y1:top,y2:bottom+18,
  stroke:'#f90','stroke-width':2},s);
 el('text',{x:PAD,y:H-6},s).textContent=
  'frames of the run: input delivery, then forward steps, per timestep';
 return s;}
function raster(e,i){const H=130,top=4,bottom=H-6;
 const pops=D.layers.slice(1),total=pops.reduce((a,L)=>a+L.size,0);
 const s=el('svg',{class:'raster',id:`e${i}-raster`,width:W,height:H,viewBox:`0 0 ${W} ${H}`});
 let base=0;const offset={};pops.forEach(L=>{offset[L.name]=base;base+=L.size;
  el('text',{x:2,y:bottom-(bottom-top)*(offset[L.name]+L.size/2)/total},s).textContent=
   L.name.slice(0,5);});
 e.rows.forEach((r,row)=>pops.forEach(L=>((r.layers[L.name]||{}).fired||[]).forEach(j=>
  el('circle',{cx:xOf(e,row),cy:bottom-(bottom-top)*(offset[L.name]+j+0.5)/total,r:1.6,
   class:'spike','data-row':row,'data-layer':L.name,'data-neuron':j},s))));
 return s;}
D.executions.forEach((e,i)=>{const o=document.createElement('option');o.value=i;
 o.textContent=e.label;sel.appendChild(o);
 const p=document.createElement('div');p.className='panel';p.id=`e${i}`;p.dataset.index=i;
 p.innerHTML=`<h2>${e.label}</h2><div class="caption">${CAPTION[e.execution]}</div>`+
  `<div class="info">timestep ${span(i,'timestep')}, forward step ${span(i,'step')} of `+
  `${span(i,'of')} in this timestep (${span(i,'run-steps')} since the start)`+
  `${span(i,'held')}<br>queued ${span(i,'queued')}; group ${span(i,'group')}; network `+
  `spikes ${span(i,'spikes')}<br>${span(i,'updated')}</div>`;
 D.layers.forEach(L=>{const h=document.createElement('div');h.textContent=L.name;
  const g=document.createElement('div');g.className='grid';g.dataset.layer=L.name;
  g.id=`e${i}-layer-${L.name}`;g.style.gridTemplateColumns=`repeat(${L.cols},12px)`;
  for(let j=0;j<L.size;j++){const c=document.createElement('div');c.className='n';g.appendChild(c);}
  p.appendChild(h);p.appendChild(g);});
 const c=document.createElement('div');c.className='counts';
 c.innerHTML=`output counts: <span id="e${i}-counts"></span>`;p.appendChild(c);
 const d=document.createElement('div');d.id=`e${i}-decision`;p.appendChild(d);
 p.appendChild(timeline(e,i));p.appendChild(raster(e,i));
 panels.appendChild(p);});
function text(i,name,v){document.getElementById(`e${i}-${name}`).textContent=v;}
function decision(e,i,idx){const el=document.getElementById(`e${i}-decision`);
 const end=idx===e.rows.length-1;el.dataset.decided='';el.dataset.settledSteps='';
 el.dataset.settledSpikes='';
 if(e.settled_row!==null&&idx>=e.settled_row){const s=e.rows[e.settled_row];
  el.dataset.decided=e.decision;el.dataset.settledSteps=s.run_steps;
  el.dataset.settledSpikes=s.network_spikes;
  el.textContent=`decided: class ${e.decision}, settled at forward step ${s.run_steps} `+
   `of the run (timestep ${s.t}, step ${s.step}), after ${s.network_spikes} network spikes`;}
 else if(end&&e.decision!==null){el.dataset.decided=e.decision;
  el.textContent=`decided at the end by the summed membrane: class ${e.decision}`;}
 else el.textContent=end?'no decision: the output counts end tied':'undecided so far';}
function draw(){const w=document.getElementById('where');w.dataset.t=t;w.dataset.k=k;
 w.textContent=`timestep ${t}, frame ${k}`;
 D.executions.forEach((e,i)=>{const rs=byT[i][t],idx=rs[Math.min(k,rs.length-1)],r=e.rows[idx];
  const p=document.getElementById(`e${i}`);p.dataset.row=idx;
  const asy=e.execution==='async';
  text(i,'timestep',r.t);text(i,'step',r.step);text(i,'of',e.forward_steps[r.t]);
  text(i,'run-steps',r.run_steps);text(i,'spikes',r.network_spikes);
  text(i,'queued',asy?r.queued:'\\u2014');text(i,'group',asy?r.group_size:'\\u2014');
  text(i,'held',k>=rs.length?' (its last frame of this timestep: the others go on)':'');
  text(i,'updated',r.updated?`population ${r.updated} updated`:'');
  D.layers.forEach(L=>{const cells=document.getElementById(`e${i}-layer-${L.name}`).children;
   const s=r.layers[L.name]||{};const sets={};
   ['fired','queued','group'].forEach(n=>sets[n]=new Set(s[n]||[]));
   const ev=L.name==='input'?new Set(D.input_events[r.t]):null;
   for(let j=0;j<cells.length;j++){const c=cells[j];
    c.className='n'+(ev&&ev.has(j)?' event':'')+
     ['fired','queued','group'].map(n=>sets[n].has(j)?' '+n:'').join('');
    if(s.v){c.dataset.v=s.v[j];c.style.background=colour(s.v[j],L.theta);}}});
  const m=Math.max(...r.counts);
  document.getElementById(`e${i}-counts`).innerHTML=r.counts.map(
   v=>`<span class="${v===m&&v>0?'lead':''}">${v}</span>`).join('');
  decision(e,i,idx);
  const cur=document.getElementById(`e${i}-cursor`),x=crisp(xOf(e,idx));
  cur.setAttribute('x1',x);cur.setAttribute('x2',x);cur.dataset.row=idx;
  document.querySelectorAll(`#e${i}-raster .spike`).forEach(c=>{const row=+c.dataset.row;
   c.setAttribute('class','spike'+(row<idx?' past':row===idx?' past now':''));});});
 scrub.value=FRAMES.findIndex(f=>f[0]===t&&f[1]===k);}
const FRAMES=[];for(let u=0;u<D.timesteps;u++){
 const n=Math.max(...byT.map(a=>a[u].length));for(let j=0;j<n;j++)FRAMES.push([u,j]);}
const scrub=document.getElementById('scrub');scrub.max=FRAMES.length-1;
scrub.oninput=()=>{[t,k]=FRAMES[+scrub.value];draw();};
function next(){if(k<frames()-1)k++;else if(t<D.timesteps-1){t++;k=0;}else stop();draw();}
function stop(){if(timer){clearInterval(timer);timer=null;}
 document.getElementById('play').textContent='play';}
document.getElementById('next').onclick=next;
document.getElementById('prev').onclick=()=>prev();
document.getElementById('next-t').onclick=()=>nextT();
document.getElementById('play').onclick=()=>play();
function prev(){if(k>0)k--;else if(t>0){t--;k=frames()-1;}draw();}
function nextT(){if(t<D.timesteps-1){t++;k=0;}draw();}
function play(){if(timer)stop();else{timer=setInterval(next,200);
 document.getElementById('play').textContent='pause';}}
document.addEventListener('keydown',ev=>{if(ev.target.tagName==='SELECT')return;
 const act={ArrowRight:next,ArrowLeft:prev,t:nextT,' ':play,
  Home:()=>{[t,k]=FRAMES[0];draw();},End:()=>{[t,k]=FRAMES[FRAMES.length-1];draw();}}[ev.key];
 if(act){ev.preventDefault();act();}});
sel.onchange=()=>{[...panels.children].forEach((p,i)=>{p.style.display=
 (sel.value==='all'||sel.value==String(i))?'':'none';});};
draw();
</script></body></html>
"""


_SCRIPT_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}


def page(data: dict) -> str:
    """The HTML page of ``data`` (from :func:`record_run` or :func:`explore_data`)."""
    # JSON inside <script>: every character that HTML's script tokenizer acts on is written
    # as a JSON escape, so that no name ("h<!--<script>", possible through NIR) can end or
    # change the element; JSON.parse reads the same values
    text = json.dumps(data)
    for ch, escape in _SCRIPT_ESCAPES.items():
        text = text.replace(ch, escape)
    return _TEMPLATE.replace("__SAMPLE__", str(int(data["sample"]))).replace("__DATA__", text)
