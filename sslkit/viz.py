"""Figures and widgets: looking at data, masks, augmented views and class activation maps.

Widgets (ipywidgets) render in JupyterLab; where no widget front end is there (papermill, CI,
nbconvert) the same function draws a static figure instead, so every notebook shows something
in every setting. ``has_widget_frontend()`` decides; pass ``interactive=True/False`` to force.
"""

from __future__ import annotations

import os

import torch


def has_widget_frontend() -> bool:
    """True inside a Jupyter front end that can show widgets (JupyterLab, Notebook, VS Code).

    Jupyter's server sets ``JPY_SESSION_NAME`` for the kernels it starts from a notebook, VS Code
    sets ``VSCODE_PID``; papermill and nbval start kernels without either.
    """
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return bool(os.environ.get("JPY_SESSION_NAME") or os.environ.get("VSCODE_PID"))


def _hwc(image: torch.Tensor):
    """(3, H, W) uint8 or float in [0, 1] -> (H, W, 3) numpy for imshow."""
    if image.dtype == torch.uint8:
        image = image.float() / 255
    return image.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def show_images(images: torch.Tensor, titles=None, masks: torch.Tensor | None = None, ncols: int = 8,
                size: float = 1.3, suptitle: str | None = None):
    """A grid of images (N, 3, H, W), with optional titles and object-mask outlines.

    Returns the matplotlib figure (shown inline in a notebook).
    """
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = min(ncols, n)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * (1.2 if titles else 1)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(_hwc(images[i]), interpolation="nearest")
        if masks is not None:
            ax.contour(masks[i].float().cpu().numpy(), levels=[0.5], colors="white", linewidths=0.8)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def dataset_tour(data, shifted=None, per_class: int = 4):
    """The dataset class by class: images, their masks, and the shifted split beside them.

    Args:
        data: a labeled ImageData (e.g. the shapes train split).
        shifted: optional ImageData of the shifted split, shown in the right-hand columns.
        per_class: images per class from each split.
    """
    import matplotlib.pyplot as plt

    splits = [("images", data, False), ("masks", data, True)] + ([("shifted", shifted, False)] if shifted else [])
    ncols = per_class * len(splits)
    fig, axes = plt.subplots(data.num_classes, ncols, figsize=(ncols * 0.9, data.num_classes * 0.95), squeeze=False)
    for k, name in enumerate(data.classes):
        for s, (title, d, as_mask) in enumerate(splits):
            idx = (d.labels == k).nonzero().squeeze(1)[:per_class]
            for j in range(per_class):
                ax = axes[k, s * per_class + j]
                ax.axis("off")
                if j >= len(idx):
                    continue
                i = idx[j]
                if as_mask and d.masks is not None:
                    ax.imshow(d.masks[i].cpu().numpy(), cmap="gray", interpolation="nearest")
                else:
                    ax.imshow(_hwc(d.images[i]), interpolation="nearest")
                if k == 0 and j == 0:
                    ax.set_title(title, fontsize=9, loc="left")
        axes[k, 0].text(-0.15, 0.5, name, transform=axes[k, 0].transAxes, ha="right", va="center", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.96, bottom=0.01, wspace=0.05, hspace=0.05)
    return fig


def simclr_views(images: torch.Tensor, crop_scale: float = 0.25, color_jitter: float = 0.5,
                 blur: float = 0.0, grayscale: float = 0.2, seed: int = 0):
    """Two augmented views of each image through lightly's ``SimCLRTransform`` (the PIL path).

    Args:
        images: uint8 (N, 3, H, W).
        crop_scale: smallest crop, as a fraction of the image area (lightly's ``min_scale``).
        color_jitter: colour jitter strength (lightly's ``cj_strength``; 0.5 for CIFAR-sized images).
        blur: probability of a Gaussian blur. grayscale: probability of turning grey.
    Returns: two float tensors (N, 3, H, W) in [0, 1], the views x0 and x1.
    """
    from torchvision.transforms.v2.functional import to_pil_image

    from .augment import lightly_transform

    transform = lightly_transform("simclr", images.shape[-1], cj_strength=color_jitter,
                                  cj_prob=0.8 if color_jitter > 0 else 0.0, min_scale=crop_scale,
                                  random_gray_scale=grayscale, gaussian_blur=blur, sigmas=(0.1, 1.0),
                                  normalize=None)  # [0, 1] views, for showing
    torch.manual_seed(seed)  # torchvision's random transforms draw from torch's global generator
    pairs = [transform(to_pil_image(img)) for img in images]
    x0 = torch.stack([p[0] for p in pairs])
    x1 = torch.stack([p[1] for p in pairs])
    return x0, x1


def _views_figure(images, **kwargs):
    import matplotlib.pyplot as plt

    x0, x1 = simclr_views(images, **kwargs)
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(n * 1.2, 3 * 1.25), squeeze=False)
    for row, (name, batch) in enumerate([("original", images), ("view x0", x0), ("view x1", x1)]):
        for j in range(n):
            axes[row, j].imshow(_hwc(batch[j]), interpolation="nearest")
            axes[row, j].axis("off")
        axes[row, 0].set_title(name, fontsize=9, loc="left")
    fig.tight_layout()
    return fig


def augmentation_explorer(images: torch.Tensor, interactive: bool | None = None, **defaults):
    """Sliders for crop scale, colour jitter, blur and grayscale; two views of the same images.

    In JupyterLab this returns an ipywidgets box whose figure follows the sliders; without a
    widget front end (or with ``interactive=False``) it draws the static figure for ``defaults``.
    """
    import matplotlib.pyplot as plt

    settings = {"crop_scale": 0.25, "color_jitter": 0.5, "blur": 0.0, "grayscale": 0.2, "seed": 0, **defaults}
    if interactive is None:
        interactive = has_widget_frontend()
    if not interactive:
        fig = _views_figure(images, **settings)
        plt.show()
        return fig
    import ipywidgets as w
    from IPython.display import display

    sliders = {
        "crop_scale": w.FloatSlider(value=settings["crop_scale"], min=0.05, max=1.0, step=0.05, description="crop scale"),
        "color_jitter": w.FloatSlider(value=settings["color_jitter"], min=0.0, max=1.0, step=0.1, description="colour jitter"),
        "blur": w.FloatSlider(value=settings["blur"], min=0.0, max=1.0, step=0.1, description="blur prob."),
        "grayscale": w.FloatSlider(value=settings["grayscale"], min=0.0, max=1.0, step=0.1, description="grayscale prob."),
        "seed": w.IntSlider(value=settings["seed"], min=0, max=20, description="seed"),
    }
    def redraw(**kwargs):
        _views_figure(images, **kwargs)
        plt.show()

    out = w.interactive_output(redraw, sliders)  # re-runs redraw whenever a slider moves
    box = w.VBox([w.HBox(list(sliders.values())[:3]), w.HBox(list(sliders.values())[3:]), out])
    display(box)
    return box


# ----------------------------------------------------------------------------------------------
# class activation maps (notebook 06)


def _overlay(ax, image, cam=None, mask=None, alpha: float = 0.5):
    """One image with a map on top (jet colours, ``alpha``) and the object's outline in white."""
    ax.imshow(_hwc(image), interpolation="nearest")
    if cam is not None:
        ax.imshow(cam.detach().float().cpu().numpy(), cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
    if mask is not None:
        ax.contour(mask.float().cpu().numpy(), levels=[0.5], colors="white", linewidths=0.8)
    ax.axis("off")


def show_cams(images: torch.Tensor, maps: dict, masks: torch.Tensor | None = None, size: float = 1.2,
              suptitle: str | None = None):
    """The images in the first row, then one row of overlays per entry of ``maps``.

    Args:
        images: uint8 (N, 3, H, W).
        maps: row label -> maps (N, H, W) in [0, 1] (e.g. ``sslkit.cam.compute_cams``).
        masks: optional (N, H, W) bool object masks, drawn as white outlines.
    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    n, rows = len(images), len(maps) + 1
    fig, axes = plt.subplots(rows, n, figsize=(n * size, rows * size * 1.1), squeeze=False)
    for j in range(n):
        _overlay(axes[0, j], images[j], None, masks[j] if masks is not None else None)
        for i, cams in enumerate(maps.values(), start=1):
            _overlay(axes[i, j], images[j], cams[j], masks[j] if masks is not None else None)
    for i, label in enumerate(["image"] + list(maps)):
        axes[i, 0].set_title(str(label), fontsize=8, loc="left")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def cam_explorer(images: torch.Tensor, cam_fn, methods, layers, targets, masks: torch.Tensor | None = None,
                 interactive: bool | None = None, static_images: int = 6):
    """Pick an image, a CAM method, a layer and a target; see the map over the image.

    Args:
        images: uint8 (N, 3, H, W) to explore.
        cam_fn: ``cam_fn(index, method, layer, target) -> (H, W)`` map in [0, 1] for image ``index``
            (notebook 06 builds it from ``sslkit.cam.compute_cams``).
        methods, layers, targets: the choices offered (names; the first of each is the default).
        masks: optional object masks (N, H, W), drawn as outlines.
        interactive: None: widgets where there is a widget front end (``has_widget_frontend``),
            otherwise a static figure: the first ``static_images`` images, one row per method,
            at the first layer and target.
    """
    import matplotlib.pyplot as plt

    methods, layers, targets = list(methods), list(layers), list(targets)
    if interactive is None:
        interactive = has_widget_frontend()
    if not interactive:
        idx = list(range(min(static_images, len(images))))
        maps = {m: torch.stack([cam_fn(i, m, layers[0], targets[0]) for i in idx]) for m in methods}
        fig = show_cams(images[idx], maps, masks[idx] if masks is not None else None,
                        suptitle=f"layer {layers[0]}, target {targets[0]}")
        plt.show()
        return fig
    import ipywidgets as w
    from IPython.display import display

    controls = {
        "index": w.IntSlider(value=0, min=0, max=len(images) - 1, description="image"),
        "method": w.Dropdown(options=methods, value=methods[0], description="method"),
        "layer": w.Dropdown(options=layers, value=layers[0], description="layer"),
        "target": w.Dropdown(options=targets, value=targets[0], description="target"),
    }

    def redraw(index, method, layer, target):
        fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
        mask = masks[index] if masks is not None else None
        _overlay(axes[0], images[index], None, mask)
        axes[0].set_title("image", fontsize=9)
        _overlay(axes[1], images[index], cam_fn(index, method, layer, target), mask)
        axes[1].set_title(f"{method} @ {layer}", fontsize=9)
        fig.tight_layout()
        plt.show()

    out = w.interactive_output(redraw, controls)  # re-runs redraw whenever a control changes
    box = w.VBox([w.HBox([controls["index"], controls["method"]]), w.HBox([controls["layer"], controls["target"]]), out])
    display(box)
    return box
