"""The shell's deployment path: python -m sslkit.train saves its backbone, python -m sslkit.deploy exports it (with a
linear head where the data has classes) to ONNX and int8, checks both against torch; bad input is exit 2."""
import subprocess
import sys

import pytest
import torch

from sslkit import cli, deploycli
from sslkit.checkpoint import CheckpointError, load_backbone

SMALL = ["--profile", "smoke", "--max-steps", "1", "--quiet", "--set", "width=8", "--set", "num_train=200",
         "--set", "num_test=60"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One step of SimCLR from the shell, with a run folder: the results, the saved backbone, the checkpoint."""
    folder = tmp_path_factory.mktemp("shell")
    assert cli.main(["simclr", *SMALL, "--results", str(folder / "run.json"), "--run-dir", str(folder / "run")]) == 0
    return folder


def test_train_saves_the_backbone_next_to_its_results_and_load_backbone_rebuilds_it(trained):
    backbone, cfg, state = load_backbone(trained / "run.backbone.pt")
    assert cfg.backbone == "resnet_tiny" and cfg.extra["width"] == 8 and cfg.recipe == "simclr"
    assert set(state["metrics"]) == {"knn", "knn_raw_pixels"}
    # a checkpoint of the run folder holds the whole method: its backbone is the same network, the same weights
    from_run, run_cfg, _ = load_backbone(trained / "run" / "epoch-0001.pt")
    assert run_cfg.backbone == cfg.backbone and run_cfg.extra["width"] == 8
    assert all(torch.equal(a, b) for a, b in zip(backbone.state_dict().values(), from_run.state_dict().values()))
    with pytest.raises(CheckpointError, match="without the config of an sslkit training"):
        torch.save({"model": backbone.state_dict()}, trained / "bare.pt")
        load_backbone(trained / "bare.pt")


def test_deploy_exports_the_classifier_and_its_int8_copy_and_checks_them(trained, capsys):
    out = trained / "models" / "simclr.onnx"
    assert deploycli.main([str(trained / "run.backbone.pt"), "--out", str(out), "--int8", "--calibration", "32",
                           "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "exporting images -> 10 class scores" in printed
    assert out.is_file() and out.with_suffix(".int8.onnx").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["simclr.int8.onnx", "simclr.onnx"]  # no leftover
    fp32_line = next(line for line in printed.splitlines() if line.startswith("onnx fp32:"))
    assert "the same class as torch for 100.0%" in fp32_line
    # the files give what torch gives on the test split
    from sslkit.data import load_split
    from sslkit.deploy import linear_classifier, onnx_session, run_onnx

    backbone, cfg, _ = load_backbone(trained / "run.backbone.pt")
    model = linear_classifier(backbone, load_split(cfg, "train"))
    test = load_split(cfg, "test")
    from sslkit.data import to_float
    with torch.no_grad():
        assert (run_onnx(onnx_session(out), test) - model(to_float(test.images))).abs().max() < 1e-3


def test_bad_input_is_the_message_and_exit_2(trained, capsys):
    import sslkit
    from sslkit.checkpoint import save_weights

    backbone = str(trained / "run.backbone.pt")
    odd_size = save_weights(trained / "odd.backbone.pt", sslkit.make_backbone("resnet_tiny", width=8)[0],
                            sslkit.make_config("smoke", image_size=20, width=8))
    unfinished = trained / "unfinished"  # a preparation stopped before its end: plan.json, no meta.json
    unfinished.mkdir(exist_ok=True)
    (unfinished / "plan.json").write_text('{"source": "x", "size": 32}')
    cases = [([str(trained / "nope.pt")], "no backbone file"),
             ([str(trained / "run.json")], "run.json is not a file torch saved (a results file?)"),
             ([str(odd_size)], "image_size=20 is not supported for export"),
             ([backbone, "--dataset", str(unfinished)], "is not a complete prepared dataset"),
             ([backbone, "--out", str(trained / "x.txt")], "give a file name ending in .onnx"),
             ([backbone, "--dataset", str(trained / "no_such_folder")], "does not exist"),
             ([backbone, "--repeats", "0"], "--repeats 0: give at least 1")]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            deploycli.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and "Traceback" not in err, (argv, err)


def test_python_m_sslkit_deploy_is_the_command_line(tmp_path):
    run = subprocess.run([sys.executable, "-m", "sslkit.deploy", str(tmp_path / "nope.pt")], capture_output=True,
                         text=True)
    assert run.returncode == 2 and "no backbone file" in run.stderr and "Traceback" not in run.stderr


def test_load_backbone_rebuilds_a_vit_of_another_image_size_and_list_valued_settings(tmp_path):
    """The image size of a ViT (its position embeddings) and list-valued backbone settings travel with the weights:
    the network rebuilt is the one trained, as recipes.build built it (backbone_arguments)."""
    import sslkit
    from sslkit.checkpoint import save_weights
    from sslkit.recipes import build

    cfg = sslkit.make_config("smoke", recipe="mae", image_size=16, hidden_dim=32, num_layers=1, num_heads=2)
    vit = build("mae", cfg).backbone
    backbone, saved_cfg, _ = load_backbone(save_weights(tmp_path / "vit.pt", vit, cfg))
    assert saved_cfg.image_size == 16
    assert all(torch.equal(a, b) for a, b in zip(vit.state_dict().values(), backbone.state_dict().values()))
    deep = sslkit.make_config("smoke", blocks=(1, 1, 1, 2), width=8)
    net, _ = sslkit.make_backbone("resnet_tiny", blocks=(1, 1, 1, 2), width=8)
    rebuilt, _, _ = load_backbone(save_weights(tmp_path / "deep.pt", net, deep))
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in net.parameters())
