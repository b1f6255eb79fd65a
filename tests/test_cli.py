"""``python -m sslkit.train``: the notebooks' code path as a script, alone and under torchrun."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslkit.config import make_config
from sslkit.results import is_complete, load_results
from sslkit.cli import main, parse_settings
from sslkit.recipes import build

TINY = ["--profile", "smoke", "--epochs", "2", "--batch-size", "32", "--quiet", "--device", "cpu",
        "--set", "num_unlabeled=128", "--set", "num_train=200", "--set", "num_test=50", "--set", "width=8"]  # 8: at width 4 oneDNN's AVX2 kernels hang (docs/test_suite.md)


def test_a_run_writes_results_and_checkpoints_and_a_rerun_resumes(tmp_path, capsys):
    results, run_dir = tmp_path / "r.json", tmp_path / "run"
    assert main(["simclr", *TINY, "--results", str(results), "--run-dir", str(run_dir), "--max-steps", "3"]) == 0
    first = load_results(results)
    assert first["metrics"]["steps"] == 3 and "knn" in first["metrics"]  # a planned stop still evaluates,
    assert first["metrics"]["cut_short"] == 1 and "3 of its planned 8 steps" in first["cut_short"]["simclr"]  # marked
    assert "cut short: max steps after 3 of 8 steps" in capsys.readouterr().out
    assert main(["simclr", *TINY, "--results", str(results), "--run-dir", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "at step 3 of 8" in out
    done = load_results(results)
    metrics = done["metrics"]
    assert "cut_short" not in done and "cut_short" not in metrics and "cut short" not in out  # the whole plan now
    assert metrics["steps"] == 8 and metrics["resumed_from_step"] == 3 and metrics["world_size"] == 1
    assert 0 <= metrics["knn"] <= 1 and metrics["images_per_s"] > 0
    assert sorted(p.name for p in run_dir.glob("epoch-*.pt")) == ["epoch-0001.pt", "epoch-0002.pt"]


def test_simsiam_from_the_shell_trains_its_recipe_and_takes_your_values(tmp_path, capsys):
    for extra, said in [([], "sgd lr 0.06\n"), (["--lr", "0.1"], "sgd lr 0.1\n"), (["--recipe", "byol"], "sgd lr 0.12\n"),
                        (["--set", "optimizer=adamw", "--lr", "0.001"], "adamw lr 0.001\n")]:
        assert main(["simsiam", *TINY, "--max-steps", "1", "--results", str(tmp_path / "r.json"), *extra]) == 0
        assert said in capsys.readouterr().out


def test_a_flag_s_value_can_also_be_set_with_set(tmp_path, capsys):
    """``--set lr=0.1`` is ``--lr 0.1`` (every Config field is a --set name, flags included), and both at once
    with the same value are one value."""
    for extra in (["--set", "lr=0.1"], ["--lr", "0.1", "--set", "lr=0.1"]):
        assert main(["simsiam", *TINY, "--max-steps", "1", "--results", str(tmp_path / "r.json"), *extra]) == 0
    assert capsys.readouterr().out.count("sgd lr 0.1\n") == 2


@pytest.mark.parametrize("args, message", [
    (["simclrr"], "unknown method 'simclrr'; choose one of: rotation, jigsaw, simclr, moco, byol"),
    (["simclr", "--set", "temperature"], "--set 'temperature': write KEY=VALUE"),
    (["simclr", "--set", "tempreature=0.2"], "unknown setting 'tempreature' for simclr on resnet_tiny (did you mean "
                                             "temperature?)"),
    (["simclr", "--set", "precision=fp8"], "unknown precision 'fp8'; choose one of: fp32, bf16, fp16"),
    (["simclr", "--profile", "huge"], "unknown profile 'huge'; choose one of: smoke, lesson, full"),
    (["byol", "--set", "target_momentum=1.5"], "target_momentum=1.5 is out of range: it must be between 0 and 1"),
    (["byol", "--set", "predictor_lr_scale=0"], "predictor_lr_scale=0: give a positive number"),
    (["simclr", "--set", "width=0"], "width=0 is out of range: it must be at least 1"),
    (["byol", "--set", "lr_schedule=linear"], "unknown lr_schedule 'linear'; choose one of: cosine, constant"),
    (["byol", "--set", "byol_lr=0.1"], "unknown setting 'byol_lr' for byol on resnet_tiny"),
    (["byol", "--recipe", "byol_sgd"], "unknown recipe 'byol_sgd' (did you mean byol?); choose one of: barlowtwins"),
    (["simsiam", "--set", "optimizer=adam"], "unknown optimizer 'adam'; choose one of: adamw, sgd"),
    (["simclr", "--set", "temperature=-1"], "temperature=-1 is out of range: it must be greater than 0"),
    (["mae", "--set", "mask_ratio=1.5"], "mask_ratio=1.5 is out of range"),
    (["moco", "--batch-size", "100"],  # the lesson's MoCo is symmetric: each step queues both views' keys
     "queue_size=2048 is not a multiple of twice the batch size 100 (symmetric: both views' keys)"),
    (["simclr", "--lr", "0"], "lr=0.0 must be greater than 0"),
    (["simclr", "--time-budget", "-5"], "time_budget_s=-5.0 must be a number of seconds greater than 0"),
    (["simclr", "--set", "lr=abc"], "lr='abc' must be a number"),
    (["simclr", "--set", "num_epochs=1.5"], "num_epochs=1.5 must be a whole number"),
    (["simclr", "--set", "temperature=abc"], "temperature='abc' must be a number (its default is"),
    (["moco", "--set", "symmetric=1"], "symmetric=1 must be True or False"),
    (["simclr", "--lr", "0.1", "--set", "lr=0.2"], "lr is given twice, 0.1 by its flag and 0.2 by --set; give it once"),
    (["simclr", "--set", "profile=smoke"], "--set profile=...: give --profile smoke instead"),
    (["simclr", "--backbone", "resnet99"], "unknown backbone 'resnet99'; choose one of: resnet_tiny"),
    (["simclr", "--max-steps", "0"], "--max-steps 0: give at least 1"),
    (["simclr", "--set", "betas=0.9"], "betas=0.9: give AdamW's two averaging coefficients, each in [0, 1)"),
    (["simclr", "--set", "temperature=None"], "--set temperature=None: None means the recipe's value here; leave"),
    (["simclr", "--set", "num_workers=-1"], "num_workers=-1: give 0 (load in the training process) or more"),
    (["simclr", "--run-dir", __file__], f"--run-dir {__file__!r} cannot hold checkpoints ([Errno 17] File exists"),
    pytest.param(["simclr", "--device", "cuda"], "device='cuda' but this machine has no CUDA GPU that torch can use; "
                 "set DEVICE = 'cpu' in a notebook, --device cpu in the shell",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_bad_input_is_a_clear_error(args, message, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SSLKIT_PROFILE", raising=False)  # the tests' conftest sets smoke
    monkeypatch.chdir(tmp_path)  # a results file would go to results/ here
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # a run that never started leaves no results file


def test_sigterm_saves_stops_with_status_143_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    import signal

    import sslkit.train

    def preempted_train(*args, **kwargs):  # the job scheduler's notice arrives after step 3
        def callback(history):
            if history.steps == 3:
                os.kill(os.getpid(), signal.SIGTERM)
        return real_train(*args, callbacks=[callback], **kwargs)
    real_train = sslkit.train.train
    results, run_dir = tmp_path / "r.json", tmp_path / "run"
    command = ["byol", *TINY, "--results", str(results), "--run-dir", str(run_dir)]
    monkeypatch.setattr(sslkit.train, "train", preempted_train)
    assert main(command) == 143
    assert "stopped: SIGTERM after 3 of 8 steps" in capsys.readouterr().out
    assert load_results(results)["metrics"]["steps"] == 3 and "knn" not in load_results(results)["metrics"]
    assert not is_complete(load_results(results))  # a stopped run's file does not look finished
    monkeypatch.setattr(sslkit.train, "train", real_train)
    assert main(command) == 0
    assert load_results(results)["metrics"]["resumed_from_step"] == 3 and "knn" in load_results(results)["metrics"]
    assert is_complete(load_results(results))


def test_settings_reach_the_method_the_backbone_and_the_views():
    assert parse_settings(["crop_scale=(0.5, 1.0)", "optimizer=sgd", "accumulate=2"]) == \
        {"crop_scale": (0.5, 1.0), "optimizer": "sgd", "accumulate": 2}
    cfg = make_config("smoke", temperature=0.3, width=4, crop_scale=(0.5, 1.0), grayscale_prob=0.5)
    method = build("simclr", cfg)
    assert method.criterion.temperature == 0.3 and method.backbone.feature_dim == 32
    assert method.augment.crop_scale == (0.5, 1.0) and method.augment.grayscale_prob == 0.5
    assert not method.criterion.gather_distributed
    assert build("simclr", cfg, distributed=True).criterion.gather_distributed
    assert method.augment.image_size == cfg.image_size
    # notebook 02's lesson recipe from the shell: a wide last stage and 24 px views
    method = build("simclr", make_config("smoke", width=8, last_width=128, view_size=24))
    assert method.backbone.feature_dim == 128 and method.augment.image_size == 24
    # DINO's global views follow view_size too (its local views scale with them)
    assert build("dino", make_config("smoke", view_size=24)).views[0].image_size == 24
    # a view knob reaches DINO too (it was accepted and silently ignored): its global views are then those views,
    # as in notebook 03; without one, DINO keeps its own
    dino = build("dino", make_config("smoke", view_size=24, grayscale_prob=0.8, crop_scale=(0.7, 1.0), num_local=1))
    assert [(v.image_size, v.grayscale_prob, v.crop_scale) for v in dino.views] == \
        [(24, 0.8, (0.7, 1.0))] * 2 + [(10, 0.8, (0.05, 0.4))]
    assert build("dino", make_config("smoke")).views[0].crop_scale == (0.4, 1.0)


def test_the_target_momentum_and_the_optimizers_momentum_are_separate_settings(tmp_path, capsys):
    """``target_momentum`` (notebook 03's knob) goes to BYOL's, MoCo's and DINO's momentum network; ``momentum`` to
    SGD alone. (They shared the name ``momentum``: ``--set momentum=0.99`` crashed BYOL at its first step.)"""
    cfg = make_config("smoke", target_momentum=0.9, momentum=0.8, optimizer="sgd")
    for name in ("byol", "moco", "dino"):
        assert build(name, cfg).target_momentum == (0.9, 1.0)
    assert build("byol", make_config("smoke", target_momentum=(0.95, 0.99))).target_momentum == (0.95, 0.99)
    for setting in ("target_momentum=0.9", "momentum=0.8"):
        assert main(["byol", *TINY, "--max-steps", "2", "--set", setting, "--results", str(tmp_path / "r.json")]) == 0
        assert "kNN accuracy" in capsys.readouterr().out


def test_torchrun_two_processes_on_cpu(tmp_path):
    """The unchanged command under torchrun (gloo): rank 0 alone logs, checkpoints and writes results."""
    results, run_dir = tmp_path / "r.json", tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSLKIT_PROFILE": ""}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                           "-m", "sslkit.train", "simclr", *TINY, "--batch-size", "16", "--results", str(results),
                           "--run-dir", str(run_dir)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("kNN accuracy") == 1  # rank 0 alone
    assert "2 process(es) on cpu, batch 16 per process (32 in all)" in proc.stdout
    metrics = load_results(results)["metrics"]
    assert metrics["world_size"] == 2 and metrics["global_batch_size"] == 32 and metrics["steps"] == 8  # 128 / 32 * 2
    assert sorted(p.name for p in run_dir.glob("epoch-*.pt")) == ["epoch-0001.pt", "epoch-0002.pt"]
    assert not list(Path(tmp_path).glob("results"))  # nothing written next to it by the other rank


def test_an_unwritable_results_path_stops_before_training(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as e:
        main(["simclr", *TINY, "--results", str(blocker / "r.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "is not writable" in err and "give --results" in err and "Traceback" not in err


def test_mae_trains_from_the_shell_with_no_other_flag(tmp_path, capsys):
    results = tmp_path / "r.json"
    assert main(["mae", "--profile", "smoke", "--max-steps", "1", "--quiet", "--results", str(results)]) == 0
    assert load_results(results)["config"]["backbone"] == "vit_tiny"


def test_a_diverging_run_exits_1_and_marks_its_results_file(tmp_path, capsys):
    results = tmp_path / "r.json"
    with pytest.warns(RuntimeWarning, match="the loss became"):
        code = main(["simclr", *TINY, "--lr", "1e30", "--results", str(results)])  # the weights overflow at once
    assert code == 1 and "failed: the loss became" in capsys.readouterr().out
    metrics = load_results(results)["metrics"]
    assert metrics["diverged"] == 1 and "knn" not in metrics



def _images(folder, classes, n=6):
    from PIL import Image
    for k, name in enumerate(classes):
        for i in range(n):
            (folder / name).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (40 * k, 10 * i, 7)).save(folder / name / f"{i}.png")
    return folder


FOLDER = ["--profile", "smoke", "--batch-size", "4", "--quiet", "--device", "cpu", "--set", "width=8"]


@pytest.mark.filterwarnings("ignore:k=200 is larger than the feature bank")  # a dozen images
def test_a_run_dir_of_another_run_is_refused_before_the_results_file_is_touched(tmp_path, capsys):
    """Resuming with other settings, or from a folder whose checkpoints all fail to load: exit 2 with the reason,
    and the results file of the earlier run stays as it was (it used to be rewritten as an empty unfinished file)."""
    a, b = _images(tmp_path / "a", ["cat", "dog"]), _images(tmp_path / "b", ["cat", "dog", "owl"])
    results, run_dir = tmp_path / "r.json", tmp_path / "run"
    assert main(["simclr", "--dataset", str(a), *FOLDER, "--run-dir", str(run_dir), "--results", str(results)]) == 0
    before = results.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["simclr", "--dataset", str(b), *FOLDER, "--run-dir", str(run_dir), "--results", str(results)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "holds a run with another config: dataset:" in err and "another --run-dir" in err
    assert results.read_bytes() == before and is_complete(load_results(results))
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "epoch-0001.pt").write_text("junk")
    (junk / "epoch-0002.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        main(["simclr", "--dataset", str(a), *FOLDER, "--run-dir", str(junk), "--results", str(tmp_path / "j.json")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "none of them loads (epoch-0001.pt, epoch-0002.pt" in err and "Traceback" not in err
    assert sorted(p.name for p in junk.iterdir()) == ["epoch-0001.pt", "epoch-0002.pt"]  # nothing pruned or written


@pytest.mark.filterwarnings("ignore:k=200 is larger than the feature bank")  # a dozen images
def test_a_batch_or_a_resume_the_data_cannot_give_is_refused_before_the_results_file_is_touched(tmp_path, capsys):
    """The batch shrinks to a small folder: what training would refuse with that batch (accumulate's chunks, MoCo's
    queue, a single image), or a resume after the folder gained images, is exit 2 before anything is written; the
    earlier run's complete results file stays (these used to fail inside training and leave it empty)."""
    a = _images(tmp_path / "a", ["cat", "dog"])
    results, run_dir = tmp_path / "r.json", tmp_path / "run"
    assert main(["simclr", "--dataset", str(a), *FOLDER, "--run-dir", str(run_dir), "--results", str(results),
                 "--max-steps", "1"]) == 0
    before = results.read_bytes()
    flat, one = _images(tmp_path, ["flat"], n=30), _images(tmp_path, ["one"], n=1)
    cases = [(["simclr", "--dataset", str(a), *FOLDER, "--set", "accumulate=3"], "not a multiple of accumulate=3"),
             (["moco", "--dataset", str(tmp_path / "flat"), "--profile", "smoke", "--quiet", "--set", "width=8"],
              "queue_size=2048 is not a multiple of the batch size 30: the queue would wrap mid-batch; use a queue of "
              "k * 30 (e.g. queue_size=480) (the batch is 30, not 128: the dataset has 30 images to train on)"),
             (["simclr", "--dataset", str(tmp_path / "one"), *FOLDER], "batches of 1 image: self-supervised training"),
             (["simclr", "--dataset", str(a), *FOLDER, "--set", "accumulate=4"], "batches of 1 image per accumulate "
                                                                                "chunk"),
             (["simclr", "--dataset", str(_images(tmp_path / "a", ["cat", "dog"], n=12)), *FOLDER, "--run-dir",
               str(run_dir)], "the data is not the same; train on the same data to resume, or give another --run-dir")]
    assert flat.is_dir() and one.is_dir()
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            main([*argv, "--results", str(results)])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "Traceback" not in err, (argv, err)
        assert results.read_bytes() == before


def test_a_folder_without_classes_trains_and_skips_the_knn_evaluation(tmp_path, capsys):
    """A flat folder (unlabeled) or one class: trained, saved, the results file complete without a kNN accuracy
    (the evaluation needs labeled splits; it used to crash after the whole training)."""
    flat = tmp_path / "flat"
    _images(tmp_path, ["flat"])
    one = _images(tmp_path / "one", ["only"])
    for folder in (flat, one):
        results = tmp_path / f"{folder.name}.json"
        assert main(["simclr", "--dataset", str(folder), *FOLDER, "--max-steps", "1", "--results", str(results)]) == 0
        data = load_results(results)
        assert is_complete(data) and data["metrics"]["steps"] == 1 and "knn" not in data["metrics"]
        assert "no kNN evaluation" in capsys.readouterr().out


def test_set_none_means_what_the_config_says_where_it_has_a_meaning():
    """--set num_unlabeled=None trains on the whole unlabeled split, --set time_budget_s=None sets no cap (make_config
    alone reads None as "the recipe's value" and dropped them)."""
    from sslkit.cli import _parser, configure

    parser = _parser()
    cfg = configure(parser.parse_args(["simclr", "--profile", "smoke", "--set", "num_unlabeled=None",
                                       "--set", "time_budget_s=None"]), parser)
    assert cfg.num_unlabeled is None and cfg.time_budget_s is None


def test_check_batch_checks_what_each_forward_pass_sees():
    """With accumulate, a step runs the batch in chunks: MoCo's queue must take whole chunks of keys (192 takes
    chunks of 64, not the batch of 128), and a chunk needs 2 images."""
    import sslkit
    from sslkit.recipes import build
    from sslkit.train import check_batch

    cfg = sslkit.make_config("smoke", recipe="moco", batch_size=128, queue_size=192, accumulate=2, width=8)
    assert check_batch(build("moco", cfg), cfg, 256) == (128, 2)
    with pytest.raises(ValueError, match="queue_size=192 is not a multiple of the batch size 128"):
        one = sslkit.make_config("smoke", recipe="moco", batch_size=128, queue_size=192, width=8)
        check_batch(build("moco", one), one, 256)
    with pytest.raises(ValueError, match="batches of 1 image per accumulate chunk"):
        simclr = sslkit.make_config("smoke", recipe="simclr", batch_size=8, accumulate=8, width=8)
        check_batch(build("simclr", simclr), simclr, 64)
