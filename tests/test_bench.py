import json
import subprocess
import sys

import pytest

import sslkit

from sslkit.bench import BENCHMARKS, main


def test_list_names_every_benchmark(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "dataset" in BENCHMARKS and all(name in out for name in BENCHMARKS)


def test_unknown_benchmark_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "sslkit.bench", "datset"], capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown benchmark 'datset'; choose one of: " in proc.stderr
    assert all(name in proc.stderr for name in BENCHMARKS)


def test_counts_below_one_and_unknown_backbones_are_clear_errors(capsys):
    for argv, message in [(["train", "--steps", "0"], "--steps 0: give at least 1"),
                          (["eval", "--num-test", "0"], "--num-test 0: give at least 1"),
                          (["eval", "--backbone", "resnet99"], "unknown backbone 'resnet99'; choose one of: ")]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_unknown_recipe_and_device_are_clear_errors_before_any_benchmark_runs(capsys, monkeypatch):
    """A bad ``--recipe`` or ``--device`` (or a GPU this machine lacks) is the message and exit 2, not a traceback."""
    import torch

    def must_not_run(args):
        raise AssertionError("the benchmark ran despite a bad flag")

    for name in ("step", "train"):
        monkeypatch.setitem(BENCHMARKS, name, must_not_run)
    cases = [(["step", "--recipe", "nope"], "unknown recipe 'nope'; choose one of: "),
             (["step", "--recipe", "rotation"], "--recipe rotation: bench step takes apart a step of two views and "
                                                "loss(x0, x1); choose one of: simclr, moco, byol, simsiam, barlowtwins"),
             (["step", "--recipe", "dino"], "--recipe dino: bench step takes apart"),
             (["generate", "--backbone", "vit_tiny"], "--backbone does nothing for generate: only dataset, eval and "
                                                      "train read it"),
             (["step", "--device", "cuda"], "--device does nothing for step: only train reads it"),
             (["train", "--device", "foo"], "unknown device 'foo'; choose one of: ")]
    if not torch.cuda.is_available():
        cases.append((["train", "--device", "cuda", "--steps", "1"], "device='cuda' but this machine has no CUDA GPU"))
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_step_flops_counts_a_known_network():
    """FLOPs of a forward and backward pass: a linear map of the flattened views costs 2 x B x in x out forward, and
    the same again backward for its weight's gradient (the views need none), for each of the two views."""
    import torch

    from sslkit.stepbench import step_flops

    class Linear(torch.nn.Module):
        augment = None  # sslkit.augment's default views

        def __init__(self, size, out):
            super().__init__()
            self.fc = torch.nn.Linear(3 * size * size, out, bias=False)

        def loss(self, x0, x1):
            return self.fc(x0.flatten(1)).square().mean() + self.fc(x1.flatten(1)).square().mean()

    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)  # the default views: 32 px
    net = Linear(32, 5)
    assert step_flops(net, images) == 2 * (2 + 2) * 4 * (3 * 32 * 32) * 5
    assert all(p.grad is None for p in net.parameters())  # the count leaves no gradients behind


def test_step_benchmark_takes_the_lesson_step_apart(capsys, monkeypatch):
    """``bench step`` on notebook 02's SimCLR lesson step: the work per image near the 42 MFLOP issue 21 counted by
    hand, phases that add up, operators sorted by their share, and every CPU speed option measured."""
    monkeypatch.delenv("SSLKIT_PROFILE", raising=False)  # the suite runs at smoke (conftest.py); this is the lesson step
    assert main(["step", "--steps", "1"]) == 0
    out = capsys.readouterr().out
    b = json.loads(out)  # stdout is the one JSON object (the table of speed options goes to stderr)
    lesson = sslkit.make_config("lesson", recipe="simclr")  # notebook 02's recipe: batches of 64, 24 px views
    assert b["recipe"] == "simclr" and b["profile"] == "lesson" and b["batch_size"] == lesson.batch_size == 64
    assert b["view_size"] == 24
    assert 35 <= b["mflop_per_image_fwd_bwd"] <= 55
    assert set(b["phases_ms"]) == {"views", "forward", "backward", "optimizer"}
    assert all(v > 0 for v in b["phases_ms"].values()) and abs(sum(b["phase_shares"].values()) - 1) < 0.01
    shares = [op["share"] for op in b["top_operators"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.001
    assert any("convolution" in op["op"] for op in b["top_operators"])
    assert set(b["optimizer_ms"]) == {"for-loop", "foreach", "fused"}
    assert set(b["speed_options"]) == {"fp32 (plain)", "channels_last", "bf16", "bf16 + channels_last"}
    assert b["speed_options"]["fp32 (plain)"]["speedup"] == 1.0 and 0 < b["share_of_matmul_rate"]


def test_the_dataloader_row_is_skipped_when_the_data_holds_too_few_batches():
    """Notebook 05 with BATCH_SIZE = 512 (its 'what to try next') crashed in the lightly-style loop, which times
    whole batches of a DataLoader: that row now says why it was not measured, and the others are measured."""
    from sslkit.recipes import build
    from sslkit.trainbench import format_table, throughput_table

    cfg = sslkit.make_config("smoke", batch_size=128, device="cpu", width=8)
    data = sslkit.load_dataset("shapes", "unlabeled", n=64, image_size=32)
    rows = throughput_table(lambda: build("simclr", cfg), data, cfg, ["fp32 (plain)"], steps=1, warmup=1,
                            lightly_workers=0)
    assert rows[0]["images_per_s"] > 0
    assert rows[1]["skipped"].startswith("64 images make 0 whole batches of 128; it times 2")
    assert "skipped: 64 images" in format_table(rows)
