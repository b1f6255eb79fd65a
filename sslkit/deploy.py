"""Deployment: from a self-supervised backbone to a small, fast model (notebook 09).

- ``export_onnx``: the backbone and its linear head as one ONNX file, with torch's dynamo exporter
  (``torch.onnx.export(..., dynamo=True)``; needs onnx and onnxscript); ``onnx_session`` and
  ``run_onnx`` run it with onnxruntime on the CPU.
- ``quantize_int8``: post-training static quantization with onnxruntime: ``quant_pre_process``, then
  ``quantize_static`` in QDQ format with per-channel int8 weights, calibrated on unlabeled images.
- ``latency_table``: median latency of repeated runs at each batch size, for torch and onnxruntime alike,
  on a stated number of threads.
- ``FeatureDistillation``: a small student learns to reproduce a frozen teacher's features on unlabeled
  images (Hinton et al. 2015 distil outputs; here the features, as in FitNets, Romero et al. 2015).
- ``prune_magnitude``: unstructured magnitude pruning (Han et al. 2015) at a given sparsity.
- ``model_card``: a short card in the style of Mitchell et al. 2019, "Model Cards for Model Reporting".

From the shell, ``python -m sslkit.deploy BACKBONE`` (``sslkit.deploycli``) exports a trained backbone, with a
linear head, to ONNX and int8, checks both against torch and times them.

onnx, onnxscript and onnxruntime are imported only when used; a missing one raises an ``ImportError``
whose one line says what to install.

>>> import torch
>>> check_image_size(30)
Traceback (most recent call last):
...
ValueError: image_size=30 is not supported for export: the ResNets halve the image three times, so give a multiple of 8 from 8 to 512 (e.g. 32), and resize the images to it (load_dataset(..., image_size=32); in the shell, train with --set image_size=32)
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=8), torch.nn.Flatten())
>>> round(sparsity(prune_magnitude(model, 0.5)), 2)
0.5
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from .config import torch_threads
from .data import ImageData, to_float
from .evaluate import accuracy, eval_mode  # noqa: F401 - accuracy: notebook 09 scores exported models with it

# module -> the package to install
PACKAGES = {"onnx": "onnx", "onnxscript": "onnxscript", "onnxruntime": "onnxruntime",
            "onnxruntime.quantization": "onnxruntime"}

# what notebook 09 needs on top of the profile. The teacher: notebook 02's architecture and views, trained
# for a planned number of epochs (num_epochs) when 02's checkpoint is missing. The student: the same kind of network
# with fewer channels; the distilled one and the one trained by SimCLR get the same epochs over the same images
_STUDENT = dict(student_backbone="resnet_tiny", student_width=8, distill_lr=2e-2, temperature=0.2)
NOTEBOOK_VALUES = {
    "smoke": dict(width=8, num_unlabeled=256, num_epochs=1, hidden_dim=64, student_last_width=16, student_epochs=1,
                  calibration_images=64, latency_repeats=5, sparsities=(0.5, 0.9), **_STUDENT),
    "lesson": dict(backbone="resnet_tiny", width=8, last_width=128, view_size=24, num_epochs=20, batch_size=128,
                   lr=5e-3, weight_decay=0.05, hidden_dim=1024, student_last_width=40, student_epochs=25,
                   calibration_images=512, latency_repeats=50, sparsities=(0.3, 0.5, 0.7, 0.9), **_STUDENT),
    "full": dict(hidden_dim=2048, student_backbone="resnet_small", student_width=32, student_last_width=256,
                 student_epochs=100, distill_lr=6e-3, temperature=0.2, calibration_images=1024, latency_repeats=50,
                 sparsities=(0.3, 0.5, 0.7, 0.9)),
}


def make_config(profile: str = "lesson", **knobs):
    """``sslkit.make_config`` with notebook 09's own values (``NOTEBOOK_VALUES``) under the knobs that are not None.

    >>> cfg = make_config("smoke", student_epochs=None, seed=3)
    >>> cfg.profile, cfg.seed, cfg.extra["student_epochs"]
    ('smoke', 3, 1)
    """
    from .config import make_config as base

    profile = os.environ.get("SSLKIT_PROFILE") or profile
    return base(profile, **{**NOTEBOOK_VALUES.get(profile, {}), **{k: v for k, v in knobs.items() if v is not None}})


def require(module: str):
    """Import ``module`` or raise an ImportError whose one line says what to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        name = PACKAGES.get(module, module)
        raise ImportError(f"this step needs {name}, which is not installed: pip install -c constraints.txt {name} "
                          f"(make install installs it with the rest)") from None


def check_image_size(image_size, in_channels: int = 3, model: nn.Module | None = None) -> int:
    """The input size an exported model takes, checked: square, a multiple of 8 from 8 to 512 px.

    With ``model``, it must also run on a (2, in_channels, image_size, image_size) batch.
    """
    if not isinstance(image_size, int) or image_size % 8 or not 8 <= image_size <= 512:
        raise ValueError(f"image_size={image_size} is not supported for export: the ResNets halve the image three "
                         f"times, so give a multiple of 8 from 8 to 512 (e.g. 32), and resize the images to it "
                         f"(load_dataset(..., image_size=32); in the shell, train with --set image_size=32)")
    if model is not None:
        try:
            with torch.no_grad(), eval_mode(model):  # each submodule's own train/eval mode comes back after
                model(torch.zeros(2, in_channels, image_size, image_size))
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"the model does not run on {in_channels}x{image_size}x{image_size} images, so it cannot "
                             f"be exported at that size: {str(e).splitlines()[0]}") from None
    return image_size


def export_onnx(model: nn.Module, path: str | Path, image_size: int = 32, in_channels: int = 3) -> Path:
    """Export ``model`` (normalised images (B, C, S, S) -> outputs (B, K)) to one ONNX file at ``path``.

    torch's dynamo exporter traces the model with ``torch.export`` and translates it with onnxscript
    (BatchNorm folds into the convolutions). The batch size stays free; the image size is fixed at
    ``image_size`` (see ``check_image_size``). Input name ``images``, output name ``outputs``. The model
    is moved to the CPU and put in eval mode (in place).
    """
    require("onnx"), require("onnxscript")
    model = model.cpu().eval()
    check_image_size(image_size, in_channels, model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(2, in_channels, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter reports each stage on stdout
        program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},),
                                    input_names=["images"], output_names=["outputs"])
    program.save(str(path), external_data=False)  # one self-contained file: its size is the model's size
    return path


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` on the CPU with ``threads`` intra-op threads (None: torch's count)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, data: ImageData | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Outputs (N, K) of an ONNX model for uint8 images (or float images already normalised).

    Raises ValueError when the images do not have the size the model was exported for.
    """
    images = data.images if isinstance(data, ImageData) else data
    want = tuple(session.get_inputs()[0].shape[1:])  # e.g. (3, 32, 32); the batch is free
    if tuple(images.shape[1:]) != want:
        raise ValueError(f"this ONNX model was exported for images of {'x'.join(map(str, want))} but got "
                         f"{'x'.join(map(str, images.shape[1:]))}; resize them (load_dataset(..., image_size="
                         f"{want[-1]})) or export again with image_size={images.shape[-1]}")
    name = session.get_inputs()[0].name
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        x = to_float(x) if x.dtype == torch.uint8 else x.float()
        out.append(torch.from_numpy(session.run(None, {name: x.numpy()})[0]))
    return torch.cat(out)


def has_vnni() -> bool:
    """Whether this x86 CPU has the VNNI int8 dot-product instructions (Linux; False where unknown)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def default_reduce_range() -> bool:
    """Whether ``quantize_int8`` keeps the weights to 7 bits by default: on x86 CPUs without VNNI only.

    There the AVX2 int8 kernels add pairs of products in 16 bits, which 8-bit weights could overflow
    (onnxruntime's advice); x86 with VNNI and ARM (dot-product instructions) keep all 8 bits.
    """
    return platform.machine().lower() in ("x86_64", "amd64") and not has_vnni()


def quantize_int8(fp32_path: str | Path, out_path: str | Path, calibration: ImageData | torch.Tensor,
                  batch_size: int = 64, reduce_range: bool | None = None) -> Path:
    """Post-training static int8 quantization of an ONNX model, calibrated on ``calibration`` images.

    1. ``quant_pre_process``: shape inference and graph optimisation (into ``*.pre.onnx``, removed after);
    2. ``quantize_static`` in QDQ format (QuantizeLinear / DequantizeLinear pairs around each op):
       weights int8 per output channel, activations uint8 with the min-max range each tensor showed on
       the calibration images (unlabeled: no label is read).

    ``calibration``: uint8 images, or float images already normalised (as ``run_onnx`` takes them).
    ``reduce_range``: 7-bit weights (None: ``default_reduce_range()``, which says why).
    """
    quantization = require("onnxruntime.quantization")
    images = calibration.images if isinstance(calibration, ImageData) else calibration
    if len(images) == 0:
        raise ValueError("the calibration set is empty: static quantization measures each activation's range on "
                         "real images; give a few hundred unlabeled images, e.g. load_split(cfg, 'unlabeled', n=512)")
    if reduce_range is None:
        reduce_range = default_reduce_range()
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    pre = out_path.with_suffix(".pre.onnx")
    quantization.quant_pre_process(str(fp32_path), str(pre))
    name = onnx_session(fp32_path, 1).get_inputs()[0].name

    class Batches(quantization.CalibrationDataReader):  # what quantize_static reads: one input dict per call
        def __init__(self):
            self.batches = iter(range(0, len(images), batch_size))

        def get_next(self):
            start = next(self.batches, None)
            if start is None:
                return None
            x = images[start:start + batch_size]
            x = to_float(x) if x.dtype == torch.uint8 else x.float()  # float images are already normalised
            return {name: x.numpy()}

    quantization.quantize_static(str(pre), str(out_path), Batches(), quant_format=quantization.QuantFormat.QDQ,
                                 per_channel=True, reduce_range=reduce_range,
                                 activation_type=quantization.QuantType.QUInt8,
                                 weight_type=quantization.QuantType.QInt8)
    pre.unlink(missing_ok=True)  # the step's own input, not a model to ship
    return out_path


def file_size_mb(path: str | Path) -> float:
    return Path(path).stat().st_size / 2**20


def latency_ms(fn, x, repeats: int = 50, warmup: int = 3) -> float:
    """Median wall time of ``fn(x)`` over ``repeats`` runs, in milliseconds (after ``warmup`` runs)."""
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def latency_table(models: dict, images: torch.Tensor, batch_sizes=(1, 64), repeats: int = 50,
                  threads: int | None = None) -> list[dict]:
    """Latency of each model at each batch size: rows {model, batch_size, ms, images_per_s, threads}.

    ``models``: name -> a torch module (run eagerly in eval mode, ``torch.inference_mode``) or an
    onnxruntime session (see ``onnx_session``; its own thread count is used and reported); each torch
    module's train/eval mode, and its submodules', is as it was afterwards. ``images``: uint8 (N, C, S, S),
    or float images already normalised, with N >= the largest batch size; every model sees the same batches.
    """
    if len(images) < max(batch_sizes):
        raise ValueError(f"{len(images)} images cannot make a batch of {max(batch_sizes)}; give at least that many")
    threads = threads or torch.get_num_threads()
    rows = []
    with torch_threads(threads):
        for name, model in models.items():
            for b in batch_sizes:
                x = images[:b]
                x = to_float(x) if x.dtype == torch.uint8 else x.float()  # float images are already normalised
                if isinstance(model, nn.Module):
                    with torch.inference_mode(), eval_mode(model):
                        ms = latency_ms(model, x, repeats)
                    used = threads
                else:
                    feed = {model.get_inputs()[0].name: x.numpy()}
                    ms = latency_ms(lambda f: model.run(None, f), feed, repeats)
                    used = model.get_session_options().intra_op_num_threads
                rows.append({"model": name, "batch_size": b, "ms": ms, "images_per_s": 1e3 * b / ms, "threads": used})
    return rows


class FeatureDistillation(nn.Module):
    """A small student learns a frozen teacher's features on unlabeled images (FitNets-style).

    Each step makes one random view of the batch (``augment``: ``AugmentParams``; None: flips and shifts
    of up to 4 px) and pulls the student's features, mapped to the teacher's dimension by a linear
    ``projector``, to the teacher's features of the same view: loss = 2 - 2 cos(projection, teacher),
    averaged over the batch. No label is used. The projector only serves the training (Romero et al.
    2015 call it the regressor): ``backbone`` is the student alone, the network to evaluate and deploy.
    The teacher stays in eval mode (its BatchNorm statistics frozen) and gets no gradient, so
    ``sslkit.train.train`` trains the student and the projector only.

    Args:
        student: (B, 3, H, W) -> (B, student_dim). teacher: (B, 3, H, W) -> (B, teacher_dim).

    >>> import sslkit
    >>> teacher, t_dim = sslkit.make_backbone("resnet_tiny", width=8)
    >>> student, s_dim = sslkit.make_backbone("resnet_tiny", width=8, last_width=32)
    >>> method = FeatureDistillation(student, s_dim, teacher, t_dim)
    >>> method.training_step(torch.zeros(4, 3, 32, 32, dtype=torch.uint8)).ndim, method.backbone is student
    (0, True)
    """

    def __init__(self, student: nn.Module, student_dim: int, teacher: nn.Module, teacher_dim: int, augment=None):
        super().__init__()
        self.backbone = student
        self.projector = nn.Linear(student_dim, teacher_dim)
        self.teacher = teacher.eval().requires_grad_(False)
        self.augment = augment

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # the teacher's BatchNorm keeps its statistics
        return self

    def training_step(self, images, labels=None):
        from .augment import augment, flip_and_translate

        x = to_float(flip_and_translate(images)) if self.augment is None else augment(images, self.augment)
        with torch.no_grad():
            target = self.teacher(x)  # (B, teacher_dim)
        z = self.projector(self.backbone(x))  # (B, student_dim) -> (B, teacher_dim)
        return (2 - 2 * nn.functional.cosine_similarity(z, target, dim=1)).mean()


def num_parameters(model: nn.Module) -> int:
    """All parameters, trainable or frozen (``sslkit.models.count_parameters`` counts the trainable ones)."""
    return sum(p.numel() for p in model.parameters())


def prune_magnitude(model: nn.Module, amount: float) -> nn.Module:
    """A copy of ``model`` with the ``amount`` fraction of smallest-magnitude conv and linear weights set to 0.

    Global unstructured L1 pruning (``torch.nn.utils.prune``), made permanent: the zeros are ordinary
    weights, and the dense kernels multiply them like any other.
    """
    from torch.nn.utils import prune

    if not 0 <= amount < 1:
        raise ValueError(f"amount={amount} is the fraction of weights to remove: choose one in [0, 1)")
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels_last = any(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous() for w in convs)
    pruned = copy.deepcopy(model).to(memory_format=torch.contiguous_format)  # prune flattens weights with view()
    params = [(m, "weight") for m in pruned.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    for m, name in params:
        prune.remove(m, name)
    return pruned.to(memory_format=torch.channels_last) if channels_last else pruned  # the layout it had


def sparsity(model: nn.Module) -> float:
    """Fraction of conv and linear weights that are exactly 0."""
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return sum((w == 0).sum().item() for w in weights) / sum(w.numel() for w in weights)


def linear_classifier(backbone: nn.Module, labeled: ImageData, features: torch.Tensor | None = None) -> nn.Module:
    """The backbone and a linear head as one network: images (B, 3, S, S) -> logits (B, classes).

    The head is notebook 07's linear probe (``fit_linear`` on the frozen features of ``labeled``), turned
    into an ``nn.Linear`` (``sslkit.probe.linear_head``). ``features``: those features, if already computed.
    """
    from .evaluate import extract_features
    from .probe import fit_linear, linear_head

    features = extract_features(backbone, labeled) if features is None else features
    classifier = fit_linear(features, labeled.labels, num_classes=labeled.num_classes)
    return nn.Sequential(backbone, linear_head(classifier)).eval()


def model_card(title: str, sections: dict) -> str:
    """A model card in Markdown: ``# title``, then one ``## heading`` per section.

    A section's content may be text (a paragraph), a list (bullets) or a dict (a two-column table).

    >>> print(model_card("demo", {"Intended use": "teaching", "Evaluation": {"accuracy": "0.91"}}))
    # Model card: demo
    <BLANKLINE>
    ## Intended use
    teaching
    <BLANKLINE>
    ## Evaluation
    | | |
    |---|---|
    | accuracy | 0.91 |
    <BLANKLINE>
    """
    lines = [f"# Model card: {title}", ""]
    for heading, content in sections.items():
        lines.append(f"## {heading}")
        if isinstance(content, dict):
            lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in content.items()]
        elif isinstance(content, (list, tuple)):
            lines += [f"- {item}" for item in content]
        else:
            lines.append(str(content))
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m sslkit.deploy BACKBONE: the command line lives in sslkit.deploycli
    from sslkit.deploycli import main

    raise SystemExit(main())
