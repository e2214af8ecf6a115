import json

import numpy as np
import pytest
from typer.testing import CliRunner

from telescope.cli.main import app
from telescope.coord.study import log_log_slope

# Small enough to be quick on 2 CPUs; same verdicts as the default 64..512 check.
SMALL = ["--widths", "32,64,128", "--head-dim", "16", "--steps", "10"]


def test_log_log_slope_recovers_a_power_law():
    widths = [64, 128, 256]
    assert log_log_slope(widths, np.array(widths, dtype=float) ** 0.5) == pytest.approx(0.5)
    assert np.isnan(log_log_slope(widths, np.array([0.0, 1.0, 2.0])))


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. matplotlib: a clipped title, a layout not applied
def test_paper_passes_and_writes_a_plot(tmp_path):
    plot = tmp_path / "coord.png"
    out = CliRunner().invoke(app, ["coord-check", "-p", "paper", *SMALL, "--plot", str(plot)])
    assert out.exit_code == 0, out.output
    assert "PASS" in out.output and "FAIL" not in out.output
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_sp_fails_at_the_hidden_and_output_layers():
    out = CliRunner().invoke(app, ["coord-check", "-p", "sp", *SMALL, "--json"])
    assert out.exit_code == 1, out.output
    doc = json.loads(out.output)
    verdicts = {row["layer"]: row for row in doc["layers"]}
    assert doc["passed"] is False
    assert verdicts["logits"]["verdict"] == "FAIL" and verdicts["logits"]["slope"] > 0.25
    assert verdicts["embedding"]["verdict"] == "PASS"


@pytest.mark.parametrize("args", [["--widths", "64"], ["--widths", "64,x"], ["-p", "nope"], ["--steps", "0"]])
def test_bad_arguments_exit_2(args):
    out = CliRunner().invoke(app, ["coord-check", *args])
    assert out.exit_code == 2, out.output
