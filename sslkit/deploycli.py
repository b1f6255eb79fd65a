"""``python -m sslkit.deploy BACKBONE``: a trained backbone to an ONNX file (and an int8 one), checked and timed;
and ``bench``, what ``python -m sslkit.bench deploy`` measures.

The shell's way through notebook 09's first half, for a backbone that ``python -m sslkit.train`` saved
(``RESULTS.backbone.pt``, or a checkpoint of its ``--run-dir``) or that notebook 02 or 04 saved in
``notebooks/checkpoints/``:

1. the backbone is rebuilt from the config saved with it; on a dataset with classes a linear head is fitted on
   the frozen features of its ``train`` split (notebook 07's linear probe, ``deploy.linear_classifier``), so the
   file maps images to class scores; on a folder without classes, or with ``--features``, it maps images to
   features;
2. ``deploy.export_onnx`` writes the fp32 file, and ``--int8`` adds ``deploy.quantize_int8``'s, calibrated on
   unlabeled images;
3. each file is checked against torch on the test split (the largest difference of the outputs, and the accuracy
   with a head) and timed at batch 1 (``deploy.latency_table``).

The data is the dataset the backbone was trained on (its saved config) unless ``--dataset`` names another.
"""

from __future__ import annotations

import argparse
import dataclasses
import zipfile
from pathlib import Path

EXAMPLES = """examples:
  python -m sslkit.train simclr --profile smoke                       # writes results/train_simclr.smoke.backbone.pt
  python -m sslkit.deploy results/train_simclr.smoke.backbone.pt      # -> results/train_simclr.smoke.onnx
  python -m sslkit.deploy results/train_simclr.smoke.backbone.pt --int8 --out models/simclr.onnx
  python -m sslkit.deploy notebooks/checkpoints/simclr_backbone.lesson.pt --features   # images -> features"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sslkit.deploy", epilog=EXAMPLES,
                                     description="Export a trained backbone (with a linear head where the data has "
                                                 "classes) to ONNX, optionally int8, checked against torch and timed.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("backbone", help="RESULTS.backbone.pt from python -m sslkit.train, a checkpoint of its "
                                         "--run-dir (epoch-NNNN.pt), or notebooks/checkpoints/NAME.PROFILE.pt "
                                         "from notebook 02 or 04")
    parser.add_argument("--out", help="the ONNX file (default: the backbone file's name with .onnx; "
                                      "--int8 adds OUT.int8.onnx beside it)")
    parser.add_argument("--int8", action="store_true", help="also write a post-training int8 quantized file")
    parser.add_argument("--features", action="store_true", help="export the backbone alone (images -> features), "
                                                                "no linear head")
    parser.add_argument("--dataset", help="the data for the head, the checks and the calibration (default: the "
                                          "backbone's training dataset)")
    parser.add_argument("--calibration", type=int, default=256, help="unlabeled images for --int8 (default 256)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per model at batch 1 (default 20)")
    return parser


def _default_out(backbone: Path) -> Path:
    name = backbone.name.removesuffix(".pt").removesuffix(".backbone")
    return backbone.with_name(name + ".onnx")


def main(argv: list[str] | None = None) -> int:
    """Returns 0 when the files were written and checked, 2 for bad input (the message, no traceback)."""
    from .checkpoint import load_backbone
    from .data import load_split
    from .deploy import (check_image_size, export_onnx, file_size_mb, latency_table, linear_classifier, onnx_session,
                         quantize_int8, require, run_onnx)
    from .evaluate import predict
    from .results import check_writable

    parser = _parser()
    args = parser.parse_args(argv)
    for flag in ("calibration", "repeats"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} {getattr(args, flag)}: give at least 1")
    path = Path(args.backbone)
    out = Path(args.out) if args.out else _default_out(path)
    if out.suffix != ".onnx":
        parser.error(f"--out {str(out)!r}: give a file name ending in .onnx, e.g. {out.with_suffix('.onnx')}")
    try:
        if not path.is_file():
            raise FileNotFoundError(f"no backbone file {str(path)!r}; python -m sslkit.train METHOD writes one next "
                                    f"to its results (RESULTS.backbone.pt)")
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; a results JSON or an image is not one
            raise ValueError(f"{path} is not a file torch saved (a results file?); give the RESULTS.backbone.pt "
                             f"file next to it, a checkpoint of a --run-dir, or a model in notebooks/checkpoints/")
        require("onnx"), require("onnxscript"), require("onnxruntime")
        backbone, cfg, state = load_backbone(path)
        trained_on = cfg.dataset
        check_image_size(cfg.image_size, model=backbone)  # before any fitting: a size the export takes
        if args.dataset:
            cfg = dataclasses.replace(cfg, dataset=args.dataset)
        check_writable(out)
        test = None if args.features else _labeled(cfg, "test")
        model, what = backbone, "features"
        if test is not None:
            model, what = linear_classifier(backbone, load_split(cfg, "train")), f"{test.num_classes} class scores"
        test = test if test is not None else load_split(cfg, "unlabeled", n=256)
        calibration = load_split(cfg, "unlabeled", n=args.calibration) if args.int8 else None
    except (OSError, ValueError, ImportError, RuntimeError) as e:  # RuntimeError: CheckpointError, an unfinished
        parser.error(str(e).replace("RESULTS_PATH=", "--out ").replace("set RESULTS_PATH to", "give --out"))  # prep.
    print(f"{path}: {cfg.backbone} trained on {trained_on} ({cfg.recipe or 'no recipe'}, {cfg.image_size} px); "
          f"exporting images -> {what}" + (f", with the data of {cfg.dataset}" if args.dataset else ""))
    try:
        files = {"onnx fp32": export_onnx(model, out, image_size=cfg.image_size)}
        if args.int8:
            files["onnx int8"] = quantize_int8(out, out.with_suffix(".int8.onnx"), calibration)
    except ValueError as e:  # what the exporter or the quantizer refuses, said in their words
        parser.error(f"cannot export {path}: {e}")
    reference = predict(model, test)  # torch's outputs, to compare each file with
    sessions = {name: onnx_session(f) for name, f in files.items()}
    rows = []
    for name, session in sessions.items():
        outputs = run_onnx(session, test)
        row = {"model": name, "file": str(files[name]), "mb": round(file_size_mb(files[name]), 3),
               "max_abs_diff": float((outputs - reference).abs().max())}
        if what != "features":
            row["accuracy"] = float((outputs.argmax(1) == test.labels).float().mean())
            row["agreement_with_torch"] = float((outputs.argmax(1) == reference.argmax(1)).float().mean())
        rows.append(row)
    latency = latency_table({"torch": model, **sessions}, test.images, batch_sizes=(1,), repeats=args.repeats)
    ms = {r["model"]: r["ms"] for r in latency}
    if what != "features":
        torch_acc = float((reference.argmax(1) == test.labels).float().mean())
        print(f"torch: accuracy {torch_acc:.3f} on {len(test)} test images, {ms['torch']:.2f} ms per image")
    for row in rows:
        score = (f", accuracy {row['accuracy']:.3f} (the same class as torch for {row['agreement_with_torch']:.1%})"
                 if "accuracy" in row else "")
        print(f"{row['model']}: {row['file']} ({row['mb']:.2f} MB), outputs within {row['max_abs_diff']:.2g} of "
              f"torch{score}, {ms[row['model']]:.2f} ms per image")
    return 0


def _labeled(cfg, split: str):
    """The labeled split, or None for data without classes (then the file maps images to features)."""
    from .data import load_split

    try:
        data = load_split(cfg, split)
    except ValueError:  # a flat folder, or a single class: nothing to fit a head on
        return None
    return data if data.num_classes > 1 else None


def bench(seed: int = 0, repeats: int = 100, calibration_images: int = 512) -> dict:
    """Size and latency of notebook 09's classifier (its lesson teacher's architecture and a linear head,
    random weights: neither depends on training): eager torch fp32, ONNX fp32 and ONNX int8 (onnxruntime,
    CPU) at batch 1 and 64, median of ``repeats`` runs on torch's thread count."""
    import tempfile
    from importlib.metadata import version

    import torch
    from torch import nn

    from .data import load_dataset, to_float
    from .deploy import (NOTEBOOK_VALUES, export_onnx, file_size_mb, has_vnni, latency_table, num_parameters,
                         onnx_session, quantize_int8, run_onnx)
    from .models import make_backbone

    lesson, image_size = NOTEBOOK_VALUES["lesson"], 32  # whatever $SSLKIT_PROFILE says
    torch.manual_seed(seed)
    backbone, dim = make_backbone(lesson["backbone"], width=lesson["width"], last_width=lesson["last_width"])
    model = nn.Sequential(backbone, nn.Linear(dim, 10)).eval()
    images = load_dataset("shapes", "unlabeled", n=calibration_images, image_size=image_size, seed=seed).images
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(model, Path(folder) / "model.onnx", image_size)
        int8 = quantize_int8(fp32, Path(folder) / "model.int8.onnx", images)
        sessions = {"onnx_fp32": onnx_session(fp32, threads), "onnx_int8": onnx_session(int8, threads)}
        with torch.no_grad():
            reference = model(to_float(images[:256]))
        diff = (run_onnx(sessions["onnx_fp32"], images[:256]) - reference).abs().max().item()
        rows = latency_table({"torch_fp32": model, **sessions}, images, (1, 64), repeats, threads)
        sizes = {"size_mb_onnx_fp32": file_size_mb(fp32), "size_mb_onnx_int8": file_size_mb(int8)}
    ms = {f"ms_{r['model']}_b{r['batch_size']}": round(r["ms"], 4) for r in rows}
    return {**ms, **{k: round(v, 4) for k, v in sizes.items()},
            "size_ratio_int8": round(sizes["size_mb_onnx_fp32"] / sizes["size_mb_onnx_int8"], 2),
            "speedup_int8_vs_torch_b1": round(ms["ms_torch_fp32_b1"] / ms["ms_onnx_int8_b1"], 2),
            "speedup_int8_vs_onnx_fp32_b64": round(ms["ms_onnx_fp32_b64"] / ms["ms_onnx_int8_b64"], 2),
            "max_abs_diff_onnx_fp32": diff, "params": num_parameters(model), "image_size": image_size,
            "threads": threads, "repeats": repeats, "cpu_vnni": has_vnni(),
            "onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "onnxscript": version("onnxscript")}
