"""python -m sslkit.sweep: the grid and the fixed parameters as sweep() gets them, the table, and exit 2 for bad input
(the sweep itself, with real papermill runs, is tested in test_sweep.py)."""
import subprocess
import sys

import pytest

from sslkit import sweepcli
from sslkit.sweep import SweepReport


def test_the_command_line_hands_sweep_its_grid_and_prints_the_table(tmp_path, monkeypatch, capsys):
    seen = {}

    def fake_sweep(notebook, grid, out_dir, fixed, limit=None):  # writes the results files a real run would
        seen.update(notebook=notebook, grid=grid, fixed=fixed, limit=limit)
        import sslkit
        from sslkit.sweep import _keep_params, run_name
        for i, method in enumerate(grid["METHOD"]):
            params = {"METHOD": method, "LR": grid["LR"][0]}
            results = sslkit.Results("experiment", sslkit.make_config("smoke"), out_dir / f"{run_name(params)}.json")
            results.update({"knn": 0.5 + i / 10, "linear": 0.6})
            results.save()
            _keep_params(results.path, params)
        return SweepReport(done=[1, 2])

    monkeypatch.setattr("sslkit.sweep.sweep", fake_sweep)
    csv = tmp_path / "table.csv"
    assert sweepcli.main([str(tmp_path), "--grid", "method=simclr,byol", "--grid", "LR=0.003", "--set", "PROFILE=smoke",
                          "--set", "CROP=[0.5, 1.0]", "--metrics", "knn", "--limit", "3", "--csv", str(csv)]) == 0
    assert seen["grid"] == {"METHOD": ["simclr", "byol"], "LR": [0.003]}
    assert seen["fixed"] == {"PROFILE": "smoke", "CROP": [0.5, 1.0]} and seen["limit"] == 3
    assert seen["notebook"] == tmp_path / "experiment.ipynb" and seen["notebook"].is_file()
    out = capsys.readouterr().out
    assert "simclr  " in out and "0.500" in out and "0.600" in out and "byol" in out and "0.600" in out
    assert "linear" not in out  # --metrics knn
    assert csv.read_text().splitlines()[0] == "METHOD,LR,wall_time_s,knn"


@pytest.mark.parametrize("argv, message", [
    (["--grid", "METHOD"], "'METHOD': write NAME=VALUES, e.g. --grid LR=0.001,0.003"),
    (["--grid", "MEHTOD=simclr"], "has no parameter(s) ['MEHTOD']; its parameters cell defines: PROFILE"),
    ([], "give at least one --grid NAME=V1,V2"),
    (["--grid", "METHOD=simclr", "--notebook", "nope.ipynb"], "no notebook 'nope.ipynb'"),
    (["--grid", "METHOD=simclr", "--set", "PROFILE"], "write NAME=VALUE, e.g. --set PROFILE=smoke"),
])
def test_bad_input_is_the_message_and_exit_2(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        sweepcli.main([str(tmp_path / "sweep"), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_python_m_sslkit_sweep_is_the_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "sslkit.sweep", str(tmp_path), "--list-parameters"],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "METHOD" in run.stdout.split()
