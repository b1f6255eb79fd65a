"""sslkit.deploy: ONNX export parity, int8 quantization, the bad-input errors, the missing-package message,
distillation and pruning, and the `deploy` benchmark (notebook 09's glue)."""
import dataclasses
import subprocess
import sys

import pytest
import torch

import sslkit
from sslkit import deploy, deploycli
from sslkit.data import load_dataset, to_float


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A small backbone with a linear head (random weights), exported to ONNX and quantized once."""
    folder = tmp_path_factory.mktemp("deploy")
    torch.manual_seed(0)
    backbone, dim = sslkit.make_backbone("resnet_tiny", width=8)
    test = load_dataset("shapes", "test", n=200, seed=0)
    model = torch.nn.Sequential(backbone, torch.nn.Linear(dim, 10)).eval()
    fp32 = deploy.export_onnx(model, folder / "model.onnx", image_size=32)
    calibration = load_dataset("shapes", "unlabeled", n=128, seed=0)
    int8 = deploy.quantize_int8(fp32, folder / "model.int8.onnx", calibration)
    return model, test, fp32, int8


def test_onnx_matches_torch(tiny):
    model, test, fp32, _ = tiny
    session = deploy.onnx_session(fp32, threads=1)
    with torch.no_grad():
        reference = model(to_float(test.images))
    for batch_size in (1, 7, 256):  # the batch size is free in the exported graph
        out = deploy.run_onnx(session, test, batch_size=batch_size)
        assert out.shape == reference.shape
        assert (out - reference).abs().max().item() <= 1e-4
    assert torch.equal(out.argmax(1), reference.argmax(1))


def test_int8_is_smaller_and_close(tiny):
    model, test, fp32, int8 = tiny
    assert deploy.file_size_mb(fp32) / deploy.file_size_mb(int8) >= 3.0  # int8 weights: a quarter of the bytes
    ops = {node.op_type for node in deploy.require("onnx").load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # the QDQ format
    y32 = deploy.run_onnx(deploy.onnx_session(fp32, 1), test)
    y8 = deploy.run_onnx(deploy.onnx_session(int8, 1), test)
    spread = (y32 - y32.mean(0)).norm()  # how much the outputs vary between images
    assert (y8 - y32).norm() / spread < 0.2, "int8 outputs drift far from fp32's"
    assert (y8.argmax(1) == y32.argmax(1)).float().mean() >= 0.9


def test_linear_classifier_is_the_linear_probe():
    """The deployed head gives the scores of notebook 07's linear probe (``fit_linear``, on standardised features)."""
    from sslkit.probe import fit_linear

    torch.manual_seed(0)
    backbone, _ = sslkit.make_backbone("resnet_tiny", width=8)
    train = load_dataset("shapes", "train", n=300, seed=0)
    features = sslkit.extract_features(backbone, train)
    model = deploy.linear_classifier(backbone, train, features)
    with torch.no_grad():
        logits = model(to_float(train.images))
    reference = fit_linear(features, train.labels).logits(features)
    assert torch.allclose(logits, reference, rtol=1e-3, atol=1e-3 * reference.abs().max().item())


def test_unsupported_input_size_is_a_clear_error(tiny, tmp_path):
    model, _, fp32, _ = tiny
    with pytest.raises(ValueError, match="image_size=30 is not supported for export.*multiple of 8"):
        deploy.export_onnx(model, tmp_path / "odd.onnx", image_size=30)
    vit, _ = sslkit.make_backbone("vit_tiny", hidden_dim=32, num_layers=1, num_heads=2)  # built for 32 px
    with pytest.raises(ValueError, match="does not run on 3x64x64 images.*built for 32x32"):
        deploy.export_onnx(vit, tmp_path / "vit.onnx", image_size=64)
    assert not (tmp_path / "odd.onnx").exists() and not (tmp_path / "vit.onnx").exists()
    with pytest.raises(ValueError, match="exported for images of 3x32x32 but got 3x64x64"):
        deploy.run_onnx(deploy.onnx_session(fp32, 1), torch.zeros(2, 3, 64, 64, dtype=torch.uint8))


def test_empty_calibration_set_is_a_clear_error(tiny, tmp_path):
    _, test, fp32, _ = tiny
    with pytest.raises(ValueError, match="the calibration set is empty"):
        deploy.quantize_int8(fp32, tmp_path / "empty.onnx", test.subset([]))
    assert not (tmp_path / "empty.onnx").exists()


@pytest.mark.parametrize("module", ["onnx", "onnxscript", "onnxruntime"])
def test_missing_package_says_what_to_install(monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if it were not installed
    with pytest.raises(ImportError) as info:
        deploy.require(module)
    message = str(info.value)
    assert f"pip install -c constraints.txt {module}" in message and "\n" not in message


def test_export_without_onnx_fails_before_tracing(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(ImportError, match="needs onnxscript"):
        deploy.export_onnx(torch.nn.Conv2d(3, 2, 3), tmp_path / "m.onnx")


def test_importing_deploy_loads_no_onnx_package():
    code = "import sys, sslkit.deploy; print(sorted(m for m in ('onnx', 'onnxscript', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_distillation_reduces_the_feature_loss_and_leaves_the_teacher_alone():
    cfg = sslkit.make_config("smoke", num_epochs=6, batch_size=64, lr=1e-2, warmup_epochs=0.5, device="cpu")
    cfg = dataclasses.replace(cfg, time_budget_s=None)  # the planned 24 steps, however busy the machine
    data = load_dataset("shapes", "unlabeled", n=256, seed=0)
    torch.manual_seed(0)
    teacher, t_dim = sslkit.make_backbone("resnet_tiny", width=8)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student, s_dim = sslkit.make_backbone("resnet_tiny", width=8, last_width=16)
    method = deploy.FeatureDistillation(student, s_dim, teacher, t_dim)
    history = sslkit.train.train(method, data, cfg, progress=False)
    first, last = sum(history.losses[:3]) / 3, sum(history.losses[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    assert not teacher.training  # BatchNorm statistics frozen
    assert all(torch.equal(teacher_state[k], v) for k, v in teacher.state_dict().items())
    assert deploy.num_parameters(student) <= deploy.num_parameters(teacher) / 2


def test_pruning_zeroes_the_smallest_weights_and_keeps_the_original():
    torch.manual_seed(0)
    model, _ = sslkit.make_backbone("resnet_tiny", width=8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned = deploy.prune_magnitude(model, 0.7)
    assert deploy.sparsity(pruned) == pytest.approx(0.7, abs=0.01) and deploy.sparsity(model) == 0.0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    kept = torch.cat([m.weight.flatten().abs() for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)])
    removed = torch.cat([m.weight.flatten().abs()[p.weight.flatten() == 0] for m, p in
                         zip(model.modules(), pruned.modules()) if isinstance(m, torch.nn.Conv2d)])
    assert removed.max() <= kept[kept > 0].min()  # global magnitude order: every removed weight was smaller
    assert pruned.stem[0].weight.is_contiguous(memory_format=torch.channels_last)  # same layout, fair timing
    with pytest.raises(ValueError, match="fraction of weights"):
        deploy.prune_magnitude(model, 1.5)


def test_bench_deploy_figures():
    from sslkit.bench import BENCHMARKS

    assert "deploy" in BENCHMARKS
    figures = deploycli.bench(repeats=2, calibration_images=64)
    for model in ("torch_fp32", "onnx_fp32", "onnx_int8"):
        for b in (1, 64):
            assert figures[f"ms_{model}_b{b}"] > 0
    assert figures["size_ratio_int8"] >= 3.5 and figures["max_abs_diff_onnx_fp32"] <= 1e-4
    assert figures["threads"] == torch.get_num_threads() and figures["image_size"] == 32
    assert figures["params"] > 200_000  # notebook 09's lesson classifier, whatever the profile
    assert {"speedup_int8_vs_torch_b1", "onnxruntime", "onnx", "onnxscript", "cpu_vnni", "params"} <= set(figures)


def _int8_weight_bound(path) -> int:
    """The largest |int8 weight| in a quantized ONNX file: 127 with 8-bit weights, 64 with reduce_range (7 bits)."""
    onnx = deploy.require("onnx")
    from onnx import numpy_helper

    return max(int(abs(numpy_helper.to_array(t).astype(int)).max()) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8)


def test_float_calibration_images_are_not_normalised_twice(tiny, tmp_path):
    """Float images are taken as already normalised (as run_onnx takes them): the same ranges as their uint8 originals."""
    _, test, fp32, int8 = tiny
    calibration = load_dataset("shapes", "unlabeled", n=128, seed=0)  # the fixture's
    from_floats = deploy.quantize_int8(fp32, tmp_path / "floats.int8.onnx", to_float(calibration.images))
    expected = deploy.run_onnx(deploy.onnx_session(int8, 1), test)
    torch.testing.assert_close(deploy.run_onnx(deploy.onnx_session(from_floats, 1), test), expected)


class _Recorder(torch.nn.Module):
    """Records the batches it is given; a BatchNorm inside stays in eval mode (frozen statistics) on its own."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm2d(3).eval()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.norm(x).flatten(1)


def test_latency_table_takes_float_images_as_normalised_and_restores_every_mode():
    model = _Recorder().train()
    model.norm.eval()
    images = to_float(load_dataset("shapes", "test", n=4, seed=0).images)
    rows = deploy.latency_table({"m": model}, images, (1, 4), repeats=1, threads=1)
    assert [r["batch_size"] for r in rows] == [1, 4]
    assert torch.equal(model.seen[-1], images)  # not normalised a second time
    assert model.training and not model.norm.training  # each module's own mode, as it was
    model.seen.clear()
    deploy.latency_table({"m": model}, (images * 0).to(torch.uint8), (2,), repeats=1, threads=1)
    torch.testing.assert_close(model.seen[-1], to_float(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))


def test_check_image_size_restores_every_mode():
    model = _Recorder().train()
    model.norm.eval()
    assert deploy.check_image_size(32, model=model) == 32
    assert model.training and not model.norm.training


@pytest.mark.parametrize("machine, vnni, expected", [("x86_64", False, True), ("AMD64", False, True),
                                                     ("x86_64", True, False), ("aarch64", False, False),
                                                     ("arm64", False, False)])
def test_default_reduce_range_is_x86_without_vnni(monkeypatch, machine, vnni, expected):
    monkeypatch.setattr(deploy.platform, "machine", lambda: machine)
    monkeypatch.setattr(deploy, "has_vnni", lambda: vnni)
    assert deploy.default_reduce_range() is expected


@pytest.mark.parametrize("reduce_range, bound", [(True, 64), (False, 127)])
def test_quantize_int8_uses_default_reduce_range(tiny, tmp_path, monkeypatch, reduce_range, bound):
    """quantize_int8's default is default_reduce_range(), the helper notebook 09's model card reads its bits from."""
    _, _, fp32, _ = tiny
    monkeypatch.setattr(deploy, "default_reduce_range", lambda: reduce_range)
    calibration = load_dataset("shapes", "unlabeled", n=16, seed=0)
    assert _int8_weight_bound(deploy.quantize_int8(fp32, tmp_path / "m.int8.onnx", calibration)) == bound


def test_notebook_09_states_the_bits_quantize_int8_uses():
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).parents[1] / "notebooks" / "09_deploy.ipynb").read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "reduce_range = deploy.default_reduce_range()" in code and "reduce_range=reduce_range" in code
    assert "not vnni" not in code  # VNNI alone does not decide it: ARM has no VNNI and keeps 8 bits
