import json
import subprocess
import sys

from sslkit.bench import BENCHMARKS, main


def test_list_names_every_benchmark(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "dataset" in BENCHMARKS and all(name in out for name in BENCHMARKS)


def test_unknown_benchmark_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "sslkit.bench", "datset"], capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown benchmark 'datset'; choose one of: " in proc.stderr
    assert all(name in proc.stderr for name in BENCHMARKS)
