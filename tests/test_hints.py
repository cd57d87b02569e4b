"""Errors a user can act on (issue 12, item 3): unknown names list the valid ones and suggest the
closest; a bad sweep fails before any cell runs. Exit code 2, no traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dfc.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def refused(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    for w in words:
        assert w in r.output, (w, r.output)


def test_unknown_preset_suggests_the_closest():
    refused(invoke("run", "diffusion_ganx"), "no spec named 'diffusion_ganx'", "Did you mean 'diffusion_gan'?",
            "Presets:", "ve_sde")


def test_unknown_target_suggests_and_lists_the_data_sets(tmp_path):
    refused(invoke("run", "ve_ode", "--target", "moon", "--out", tmp_path), "unknown target 'moon'",
            "Did you mean 'moons'?", "ring8", "swissroll", "digits")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("option,value,closest", [("--solver", "heunn", "heun"), ("--clock", "log_sigma", "logsigma"),
                                                  ("--backend", "torchsd", "torchsde")])
def test_unknown_choice_suggests_the_closest(tmp_path, option, value, closest):
    refused(invoke("run", "ve_sde", option, value, "--out", tmp_path), f"Did you mean '{closest}'?")


def test_unknown_param_and_run_setting(tmp_path):
    refused(invoke("run", "ve_sde", "--set", "etaa=1", "--out", tmp_path), "no param 'etaa'", "Did you mean 'eta'?")
    refused(invoke("run", "ve_sde", "--run", "step=4", "--out", tmp_path), "unknown run setting 'step'",
            "Did you mean 'steps'?")


def test_a_bad_sweep_fails_before_any_cell(monkeypatch):
    import dfc.bench as b

    ran = []
    monkeypatch.setattr(b, "run_cells", lambda *a, **k: ran.append(a) or [])
    refused(invoke("bench", "ve_sde", "--sweep", "etaa=0,1"), "no param or run entry 'etaa'", "Did you mean 'eta'?",
            "sigma_max")
    refused(invoke("bench", "ve_sde", "--sweep", "clock=sigma;sigmaa"), "clock=sigmaa", "Did you mean 'sigma'?")
    refused(invoke("bench", "ve_sde", "--sweep", "eta=-3"), "eta=-3", "negative")  # ill-posed: g² − λ² < 0
    assert ran == []
