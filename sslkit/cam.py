"""Class activation maps for self-supervised backbones, and scores against the true object masks.

pytorch-grad-cam (the ``grad-cam`` package) computes the maps; this module is the glue an SSL
backbone needs, where Grad-CAM users usually get stuck:

- *Targets without a classifier* (pytorch-grad-cam issues #221, #387, #424): an SSL backbone
  outputs an embedding, not class scores. ``EmbeddingSimilarity`` scores the cosine similarity
  of the embedding to a chosen direction: a class prototype (the mean embedding of a few labeled
  images, ``class_prototypes``) or the embedding of another view of the same image.
- *Layers* by name (``get_layer``), with an error that lists the layers there are.
- *ViTs* (issues #513, #426): tokens (B, 1 + h*w, D) must be reshaped to (B, D, h, w)
  (``vit_reshape``), and the layer must be one whose output reaches the target
  (``check_gradients`` says when it does not).
- *Scores*: because the default dataset knows where every object is, a map can be scored:
  ``cam_in_mask`` (the fraction of the map's energy inside the object) and ``cam_iou``.

>>> import torch
>>> cams = torch.zeros(1, 4, 4); cams[0, :2, :2] = 1.0
>>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2, :] = True
>>> cam_in_mask(cams, masks), cam_iou(cams, masks)
(1.0, 0.5)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CAM_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam", "hirescam", "layercam")


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "eigencam": pgc.EigenCAM,
               "scorecam": pgc.ScoreCAM, "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM}
    if method not in classes:
        raise ValueError(f"unknown CAM method {method!r}; choose one of: {', '.join(CAM_METHODS)}")
    return classes[method]


def layer_names(model: nn.Module) -> list[str]:
    """Names of the model's submodules, as ``get_layer`` takes them."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (e.g. "layers.3" or "encoder.layers.encoder_layer_1.ln_1")."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        candidates = [n for n in layer_names(model) if n.count(".") <= 2]
        raise ValueError(f"the model has no layer {name!r}; layers it has: {', '.join(candidates)}")
    return modules[name]


class EmbeddingSimilarity:
    """A Grad-CAM target for a backbone without a classifier: cos(embedding, direction).

    Args:
        direction: (D,) e.g. a class prototype, or the embedding of another view of the image.
    """

    def __init__(self, direction: torch.Tensor):
        self.direction = F.normalize(direction.detach().flatten().float(), dim=0)

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        out = model_output.flatten().float()
        return F.cosine_similarity(out, self.direction.to(out.device), dim=0)


@torch.no_grad()
def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, D) the mean L2-normalised feature of each class: a concept embedding per class."""
    f = F.normalize(features.float(), dim=1)
    protos = torch.stack([f[labels == k].mean(0) for k in range(num_classes)])
    return F.normalize(protos, dim=1)


def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B, 1 + h*w, D), class token first -> a feature map (B, D, h, w) for CAM."""
    n = tokens.shape[1] - 1
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"{tokens.shape[1]} tokens are not a class token plus a square grid of patches; is this "
                         f"the output of an encoder block of a ViT?")
    return tokens[:, 1:].reshape(tokens.shape[0], side, side, tokens.shape[2]).permute(0, 3, 1, 2)


def check_gradients(model: nn.Module, layer_name: str, images: torch.Tensor, reshape=None) -> None:
    """Raise a clear error when ``layer_name``'s output gets no gradient from the model's output.

    For torchvision's VisionTransformer the last encoder block's output reaches the output only
    through the class token, so its patch tokens get zero gradient; use the first LayerNorm of
    the last block ("encoder.layers.encoder_layer_<last>.ln_1") with ``reshape=vit_reshape``.
    """
    layer = get_layer(model, layer_name)
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("out", o))
    try:
        with torch.enable_grad():
            out = model(images)
            act = saved["out"]
            if act.ndim == 3 and reshape is None:
                raise ValueError(f"layer {layer_name!r} outputs tokens {tuple(act.shape)}, not a feature map: pass "
                                 f"reshape=sslkit.cam.vit_reshape")
            grad = torch.autograd.grad(out.float().square().sum(), act, allow_unused=True)[0]
    finally:
        handle.remove()
    if grad is not None and act.ndim == 3:
        grad = grad[:, 1:]  # the patch tokens: what the map is made of
    if grad is None or grad.abs().max() == 0:
        hint = ""
        blocks = [n for n in layer_names(model) if n.endswith(".ln_1")]
        if blocks:
            hint = f"; for a ViT use layer {blocks[-1]!r} with reshape=sslkit.cam.vit_reshape"
        raise ValueError(f"layer {layer_name!r} gets zero gradient from the model's output, so Grad-CAM maps "
                         f"from it are empty{hint}")


def compute_cams(model: nn.Module, images: torch.Tensor, layer_name: str, targets=None, method: str = "gradcam",
                 reshape=None, batch_size: int = 64) -> torch.Tensor:
    """Maps (N, H, W) in [0, 1] from pytorch-grad-cam, one per input image.

    Args:
        model: maps normalised images (N, 3, H, W) to outputs (class scores or embeddings).
        images: normalised float images (``sslkit.data.to_float``).
        layer_name: the layer whose activations are weighted (``layer_names(model)`` lists them).
        targets: one target per image (e.g. ``EmbeddingSimilarity``, pytorch-grad-cam's
            ``ClassifierOutputTarget``); None: the highest-scoring output.
        method: one of ``CAM_METHODS``.
        reshape: for ViTs, ``vit_reshape``.
    """
    cam_cls = _cam_class(method)
    layer = get_layer(model, layer_name)
    was_training = model.training
    cams = []
    try:
        with cam_cls(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
            if method == "scorecam":
                cam.batch_size = batch_size
            for start in range(0, len(images), batch_size):
                t = None if targets is None else list(targets[start:start + batch_size])
                cams.append(torch.from_numpy(cam(input_tensor=images[start:start + batch_size], targets=t)))
    finally:
        model.train(was_training)
    return torch.cat(cams).float()


def _check_sizes(cams: torch.Tensor, masks: torch.Tensor):
    if cams.shape != masks.shape:
        raise ValueError(f"maps {tuple(cams.shape)} and masks {tuple(masks.shape)} differ in size; compute the maps "
                         f"on the images the masks belong to (pytorch-grad-cam resizes maps to the input size)")


def cam_in_mask(cams: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of the fraction of the map's energy (sum) that falls inside the object mask.

    A map that ignores the object scores about the object's share of the image (~0.2 on shapes).
    """
    _check_sizes(cams, masks)
    cams = cams.float().clamp(min=0)
    total = cams.sum(dim=(1, 2)).clamp(min=1e-12)
    return ((cams * masks).sum(dim=(1, 2)) / total).mean().item()


def cam_iou(cams: torch.Tensor, masks: torch.Tensor, threshold: float = 0.5) -> float:
    """Mean IoU of the map thresholded at ``threshold`` (of each map's max) with the object mask."""
    _check_sizes(cams, masks)
    peak = cams.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    hot = cams >= threshold * peak
    inter = (hot & masks).sum(dim=(1, 2)).float()
    union = (hot | masks).sum(dim=(1, 2)).float().clamp(min=1)
    return (inter / union).mean().item()
