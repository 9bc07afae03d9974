"""The hardware cost model (asyncsnn.cost, docs/cost.md): each formula on hand-made counts."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import asyncsnn
from asyncsnn.cost import (
    PROFILES,
    Profile,
    ann_energy_pj,
    energy_pj,
    get_profile,
    load_profile,
    neuron_updates,
    sample_cost,
    time_ns,
)
from asyncsnn.evaluation import Execution, evaluate
from asyncsnn.training import Split, TrainConfig

P = Profile("toy", e_synop_pj=2.0, e_spike_pj=3.0, e_neuron_pj=5.0, t_step_ns=7.0,
            t_barrier_ns=11.0, t_spike_ns=13.0, e_mac_pj=17.0)  # fmt: skip


def test_builtin_profiles_carry_the_published_figures():
    loihi = PROFILES["loihi"]
    assert (loihi.e_synop_pj, loihi.e_spike_pj, loihi.e_neuron_pj) == (23.6, 1.7, 81.0)
    assert (PROFILES["spinnaker2"].e_synop_pj, PROFILES["spinnaker2"].e_neuron_pj) == (450, 2190)
    assert PROFILES["seneca"].e_synop_pj == 2.8
    assert (PROFILES["horowitz45"].e_synop_pj, PROFILES["horowitz45"].e_mac_pj) == (0.9, 4.6)
    assert all(p.source for p in PROFILES.values())


def test_energy_is_synops_spikes_and_neuron_updates_weighted():
    # 10 synops * 2 + 4 spikes * 3 + 6 updates * 5 = 20 + 12 + 30
    assert energy_pj(10, 4, 6, P) == 62.0
    # Loihi: 100 synops, 10 spikes, 50 updates = 2360 + 17 + 4050 pJ
    assert energy_pj(100, 10, 50, PROFILES["loihi"]) == pytest.approx(6427.0)
    # and its time: 4 forward steps or barriers of 113 ns, 10 spikes of 2.1 ns
    assert time_ns(4, 10, PROFILES["loihi"], "layered") == pytest.approx(473.0)


def test_async_time_is_forward_steps_times_the_step_plus_routing():
    assert time_ns(5, 2, P, "async") == 5 * 7 + 2 * 13


def test_layered_time_is_a_barrier_per_layer_per_timestep():
    # 3 layers x 4 timesteps = 12 forward steps of layered execution
    assert time_ns(12, 2, P, "layered") == 12 * 11 + 2 * 13
    with pytest.raises(ValueError, match="'layered' or 'async'"):
        time_ns(1, 1, P, "sync")


def test_unknown_timing_is_nan():
    assert math.isnan(time_ns(3, 1, PROFILES["spinnaker2"], "async"))


def test_sample_cost_on_a_hand_made_run():
    # 2 timesteps, 2 samples, 3 neurons
    spikes = torch.tensor([[[1, 0, 1], [0, 0, 0]], [[1, 1, 0], [0, 0, 1]]], dtype=torch.float)
    result = SimpleNamespace(
        spikes=spikes,
        synops=torch.tensor([[10.0, 0.0], [4.0, 6.0]]),
        forward_steps=torch.tensor([[2, 1], [3, 2]]),
    )
    latency = {
        "latency_steps": torch.tensor([2.0, math.nan]),
        "latency_spikes": torch.tensor([1.0, math.nan]),
    }
    c = sample_cost(result, "async", P, latency)
    # sample 0: 14 synops, 4 spikes, 3 neurons x 2 timesteps = 6 updates; 5 steps
    # sample 1: 6 synops, 1 spike, 6 updates; 3 steps
    assert c["energy_nj"].tolist() == pytest.approx([(28 + 12 + 30) / 1e3, (12 + 3 + 30) / 1e3])
    assert c["time_us"].tolist() == pytest.approx([(35 + 52) / 1e3, (21 + 13) / 1e3])
    assert c["latency_time_us"][0].item() == pytest.approx((14 + 13) / 1e3)
    assert math.isnan(c["latency_time_us"][1].item())
    layered = sample_cost(result, "layered", P)
    assert layered["time_us"].tolist() == pytest.approx([(55 + 52) / 1e3, (33 + 13) / 1e3])
    assert "latency_time_us" not in layered


def test_the_built_in_profiles_follow_the_timestep_rule():
    # Loihi's from its published description; the others assumed (docs/cost.md)
    assert {k: p.update_rule for k, p in PROFILES.items()} == dict.fromkeys(PROFILES, "timestep")
    assert all("Update rule 'timestep'" in p.source for p in PROFILES.values())
    with pytest.raises(ValueError, match="update_rule must be one of 'timestep', 'event'"):
        Profile("x", e_synop_pj=1.0, update_rule="spikes")


def _tiny():
    """input -> 2 hidden (threshold 0.5) -> 1 output (threshold 1.5), weights 1."""
    hidden, out = nn.Linear(1, 2, bias=False), nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        hidden.weight.fill_(1.0)
        out.weight.fill_(1.0)
    return asyncsnn.Network.sequential([hidden, out], tau_m=2e-3, threshold=[0.5, 1.5])


def test_the_event_rule_charges_the_updates_each_execution_makes():
    """Two timesteps with input: layered updates the 2 hidden neurons and the output (3 per
    timestep), asynchronous execution with F=1 reaches the output once per hidden spike (4):
    2 hidden + 1 output spike per timestep either way, and 2 x (2 + 2 x 1) = 8 synops (the
    input event reaches 2 neurons, each hidden spike 1)."""
    net = _tiny()
    x = torch.tensor([[[1.0]], [[0.0]], [[1.0]]])
    with torch.no_grad():
        runs = {
            "layered": asyncsnn.run(net, x, dt=1e-3, execution="layered"),
            "async": asyncsnn.run(net, x, dt=1e-3, scheduler="fifo", group_size=1),
        }
    event = Profile("ev", e_synop_pj=2.0, e_spike_pj=3.0, e_neuron_pj=5.0, update_rule="event")
    timestep = Profile("ts", e_synop_pj=2.0, e_spike_pj=3.0, e_neuron_pj=5.0)
    for name, updates in {"layered": 6, "async": 8}.items():
        r = runs[name]
        assert r.synops.sum().item() == 8 and r.spikes.sum().item() == 6, name
        assert neuron_updates(r, "event").tolist() == [updates], name
        assert neuron_updates(r).tolist() == [9.0], name  # 3 neurons x 3 timesteps
        e = sample_cost(r, name, event)["energy_nj"].item()
        assert e == pytest.approx((8 * 2 + 6 * 3 + updates * 5) / 1e3), name
        t = sample_cost(r, name, timestep)["energy_nj"].item()
        assert t == pytest.approx((8 * 2 + 6 * 3 + 9 * 5) / 1e3), name
    r = SimpleNamespace(spikes=torch.zeros(1, 1, 3), event_updates=None, engine="triton")
    with pytest.raises(ValueError, match="does not have.*'triton'"):
        neuron_updates(r, "event")
    with pytest.raises(ValueError, match="an update rule is one of"):
        neuron_updates(r, "sometimes")


def test_update_rule_from_toml(tmp_path):
    f = tmp_path / "chip.toml"
    f.write_text('name = "chip"\ne_synop_pj = 1.5\nupdate_rule = "event"\n')
    assert load_profile(f).update_rule == "event"
    f.write_text('name = "chip"\ne_synop_pj = 1.5\nupdate_rule = 1\n')
    with pytest.raises(ValueError, match="update_rule must be a string, got 1"):
        load_profile(f)
    f.write_text('name = "chip"\ne_synop_pj = 1.5\nupdate_rule = "always"\n')
    with pytest.raises(ValueError, match="chip.toml: .*update_rule must be one of"):
        load_profile(f)


def test_ann_energy_is_one_mac_per_synapse():
    net = asyncsnn.Network.sequential([nn.Linear(4, 3), nn.Linear(3, 2)])
    assert ann_energy_pj(net, P) == (4 * 3 + 3 * 2) * 17.0


def test_profile_from_toml(tmp_path):
    f = tmp_path / "chip.toml"
    f.write_text('name = "chip"\ne_synop_pj = 1.5\nt_step_ns = 20\nsource = "datasheet"\n')
    p = get_profile(str(f))
    assert (p.name, p.e_synop_pj, p.t_step_ns, p.e_spike_pj) == ("chip", 1.5, 20, 0.0)
    assert load_profile(f) == p


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('name = "c"\ne_synop_pj = 1\ne_synapse = 2\n', "unknown cost profile key.*e_synapse"),
        ('name = "c"\n', "needs the key 'e_synop_pj'"),
        ('name = "c"\ne_synop_pj = -1\n', "e_synop_pj must be a number >= 0, got -1"),
        ('name = "c"\ne_synop_pj = "fast"\n', "e_synop_pj must be a number >= 0, got 'fast'"),
        ('name = "c"\ne_synop_pj = 1\nsource = 3\n', "source must be a string"),
        ("name = \n", "not valid TOML"),
    ],
)
def test_bad_toml_profiles_say_what_is_wrong(tmp_path, text, match):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_profile(f)


def test_unknown_profile_name():
    with pytest.raises(ValueError, match="unknown cost profile 'tpu'.*loihi"):
        get_profile("tpu")


def test_evaluate_reports_the_cost_end_to_end():
    torch.manual_seed(0)
    layers = [nn.Linear(6, 5, bias=False), nn.Linear(5, 3, bias=False)]
    for layer in layers:
        nn.init.uniform_(layer.weight, 0.2, 0.6)
    net = asyncsnn.Network.sequential(layers, tau_m=1e-3, threshold=0.5)
    x = (torch.rand(4, 7, 6) < 0.5).float()  # (samples, timesteps, inputs)
    split = Split(x, torch.tensor([0, 1, 2, 0]))
    cfg = TrainConfig(dt=1e-3, input_dropout=0.0, refractory_dropout=0.0)
    for how in (Execution("layered"), Execution("async", "random", 2)):
        out = evaluate(net, split, cfg, how, stop_on_first_output=False, cost_profile=P)
        s, per = out["summary"], out["per_sample"]
        assert out["cost_profile"] == "toy"
        updates = 8 * 7  # 5 + 3 neurons x 7 timesteps
        expect = (per["synops"] * 2 + per["spikes"] * 3 + updates * 5).double().mean() / 1e3
        assert s["energy_nj"] == pytest.approx(float(expect))
        t = 11.0 if how.execution == "layered" else 7.0
        steps = per["forward_steps"].double() * 7  # per-timestep mean x timesteps
        expect = (steps * t + per["spikes"].double() * 13).mean() / 1e3
        assert s["time_us"] == pytest.approx(float(expect))
        if how.execution == "layered":  # one spike-sending population (hidden) x 7 timesteps
            assert s["time_us"] == pytest.approx(
                float((1 * 7 * 11 + per["spikes"] * 13).mean()) / 1e3
            )
        ok = ~torch.isnan(per["latency_steps"])
        if ok.any():
            lat = per["latency_steps"][ok].double() * t + per["latency_spikes"][ok].double() * 13
            assert s["latency_time_us_median"] == pytest.approx(float(lat.median()) / 1e3)


def test_cli_cost_profile_by_name_and_by_file(tmp_path):
    """``evaluate --cost-profile`` on a trained run: the reported energy is the profile's
    formula applied to the same run's reported counts (energy is linear, so the mean energy
    is the formula on the mean counts)."""
    import json

    from click.testing import CliRunner

    from asyncsnn.cli import main
    from asyncsnn.training import load_run

    run = tmp_path / "run"
    small = ["--limit-train", "60", "--limit-test", "20", "--epochs", "1", "--hidden", "12"]
    small += ["--timesteps", "6", "--training", "layered", "-q"]
    r = CliRunner().invoke(main, ["train", "--out", str(run), *small])
    assert r.exit_code == 0, r.output
    net, cfg, facts = load_run(run)
    updates = (net.n_neurons - net.n_input) * facts.timesteps

    def evaluate_json(*options):
        r = CliRunner().invoke(main, ["evaluate", str(run), "--json", *options])
        assert r.exit_code == 0, r.output
        return json.loads(r.output)

    s2 = evaluate_json("--execution", "async", "--cost-profile", "spinnaker2")
    assert s2["cost_profile"] == "spinnaker2"
    expect = (s2["synops_per_sample"] * 450 + updates * 2190) / 1e3
    assert s2["energy_nj"] == pytest.approx(expect)
    assert s2["time_us"] is None  # SpiNNaker 2 publishes no timing: not known, not 0

    chip = tmp_path / "chip.toml"
    chip.write_text('name = "chip"\ne_synop_pj = 2\ne_spike_pj = 5\nt_barrier_ns = 100\n')
    own = evaluate_json("--execution", "layered", "--cost-profile", str(chip))
    assert own["cost_profile"] == "chip"
    expect = (own["synops_per_sample"] * 2 + own["spikes_per_sample"] * 5) / 1e3
    assert own["energy_nj"] == pytest.approx(expect)
    # layered: one barrier per spike-sending population (the hidden layer) per timestep
    assert own["time_us"] == pytest.approx(facts.timesteps * 100 / 1e3)

    r = CliRunner().invoke(main, ["evaluate", str(run), "--cost-profile", "tpu"])
    assert r.exit_code != 0 and "unknown cost profile 'tpu'" in r.output


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("nan", "e_synop_pj must be a number >= 0, got nan"),
        ("inf", "e_synop_pj must be a number >= 0, got inf"),
        ("1e308", "e_synop_pj must be a number >= 0, got 1e[+]?308 [(]finite, at most 1e[+]09"),
        ("-inf", "e_synop_pj must be a number >= 0, got -inf"),
    ],
)
def test_non_finite_and_huge_constants_are_refused_naming_the_file(tmp_path, value, match):
    f = tmp_path / "chip.toml"
    f.write_text(f'name = "chip"\ne_synop_pj = {value}\n')
    with pytest.raises(ValueError, match=match) as err:
        load_profile(f)
    assert str(err.value).startswith(f"{f}: ")


@pytest.mark.parametrize("key", ["t_step_ns", "t_barrier_ns", "e_mac_pj"])
def test_an_unknown_constant_is_left_out_not_written_nan(tmp_path, key):
    f = tmp_path / "chip.toml"
    f.write_text(f'name = "chip"\ne_synop_pj = 1\n{key} = nan\n')
    with pytest.raises(ValueError, match=f"{key} is nan; leave the key out"):
        load_profile(f)
    f.write_text(f'name = "chip"\ne_synop_pj = 1\n{key} = inf\n')
    with pytest.raises(ValueError, match=f"{key} must be a number >= 0, got inf"):
        load_profile(f)
    assert math.isnan(getattr(Profile("chip", e_synop_pj=1.0), key))  # left out: not known


def test_a_binary_or_unreadable_profile_file_is_named(tmp_path):
    from click.testing import CliRunner

    from asyncsnn.cli import main

    f = tmp_path / "chip.toml"
    f.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    with pytest.raises(ValueError, match=f"^{f}: not a text file"):
        load_profile(f)
    with pytest.raises(ValueError, match=f"^{tmp_path / 'none.toml'}: cannot be read"):
        load_profile(tmp_path / "none.toml")
    r = CliRunner().invoke(main, ["compare", str(tmp_path), "--cost-profile", str(f)])
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [f"Error: {f}: not a text file (a cost profile is TOML)"]
