"""Class activation maps for self-supervised backbones, and scores against the true object masks.

pytorch-grad-cam (the ``grad-cam`` package) computes the maps; this module is the glue an SSL
backbone needs, where Grad-CAM users usually get stuck:

- *Targets without a classifier* (pytorch-grad-cam issues #221, #387, #424): an SSL backbone
  outputs an embedding, not class scores. ``EmbeddingSimilarity`` scores the cosine similarity
  of the embedding to a chosen direction: a class prototype (the mean embedding of a few labeled
  images, ``prototype_targets``) or the embedding of another view of the same image
  (``two_view_targets``). ``fit_probe`` puts a linear classifier on a frozen backbone, for the
  usual class-score target (pytorch-grad-cam's ``ClassifierOutputTarget``).
- *Layers* by name (``get_layer``), with an error that lists the layers there are.
- *ViTs* (issues #513, #426): tokens (B, 1 + h*w, D) must be reshaped to (B, D, h, w)
  (``vit_reshape``), and the layer must be one whose output reaches the target
  (``check_gradients`` says when it does not; ``vit_layer`` names the right one).
  ``cls_attention_maps``: where the class token looks, DINO-style, at image resolution.
- *Scores*: because the default dataset knows where every object is, a map can be scored:
  ``cam_in_mask`` (the fraction of the map's energy inside the object) and ``cam_iou``; where a
  classifier exists, ``road_score`` (pytorch-grad-cam's ROAD: does removing what the map points
  at change the prediction?).

>>> import torch
>>> cams = torch.zeros(1, 4, 4); cams[0, :2, :2] = 1.0
>>> masks = torch.zeros(1, 4, 4, dtype=torch.bool); masks[0, :2, :] = True
>>> cam_in_mask(cams, masks), cam_iou(cams, masks)
(1.0, 0.5)
"""

from __future__ import annotations

import contextlib
import difflib
import io

import torch
import torch.nn.functional as F
from torch import nn

from .evaluate import eval_mode

CAM_METHODS = ("gradcam", "gradcam++", "eigencam", "scorecam", "hirescam", "layercam")
GRADIENT_FREE = ("eigencam", "scorecam")  # methods that never backpropagate (any layer with activations works)


def _cam_class(method: str):
    import pytorch_grad_cam as pgc

    classes = {"gradcam": pgc.GradCAM, "gradcam++": pgc.GradCAMPlusPlus, "eigencam": pgc.EigenCAM,
               "scorecam": pgc.ScoreCAM, "hirescam": pgc.HiResCAM, "layercam": pgc.LayerCAM}
    if method not in classes:
        raise ValueError(f"unknown CAM method {method!r}; choose one of: {', '.join(CAM_METHODS)}")
    return classes[method]


# ----------------------------------------------------------------------------------------------
# layers


def layer_names(model: nn.Module) -> list[str]:
    """Names of the model's submodules, as ``get_layer`` takes them.

    >>> layer_names(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    ['0', '1']
    """
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (e.g. "layers.3" or "encoder.vit.encoder.layers.encoder_layer_3.ln_1").

    A name the model does not have raises a ValueError listing the layers it has (the closest first).
    """
    modules = dict(model.named_modules())
    if name not in modules or not name:
        names = layer_names(model)
        close = difflib.get_close_matches(str(name), names, n=3, cutoff=0.5)
        depth = min((n.count(".") for n in names), default=0) + 1  # the top-level blocks and their direct parts
        short = [n for n in names if n.count(".") <= depth and n not in close][:40]
        blocks = [n for n in names if n.endswith(".ln_1")]  # a ViT: its blocks sit deep inside
        short += [n.rsplit(".", 1)[0] for n in blocks] + blocks[-1:]
        raise ValueError(f"the model has no layer {name!r}; layers it has: {', '.join(dict.fromkeys(close + short))}"
                         f"{' ...' if len(names) > len(close + short) else ''} (all of them: "
                         f"sslkit.cam.layer_names(model))")
    return modules[name]


def vit_layer(model: nn.Module) -> str:
    """The layer Grad-CAM needs in a ViT: the first LayerNorm of the last block (use ``vit_reshape``).

    The last block's *output* reaches a class-token feature only through the class token, so its
    patch tokens get zero gradient; the input of the last attention still mixes into the class
    token, so its patch tokens do get one (pytorch-grad-cam issue #513).

    >>> from sslkit.models import make_backbone
    >>> vit_layer(make_backbone("vit_tiny", num_layers=2, hidden_dim=32, num_heads=2)[0])
    'encoder.vit.encoder.layers.encoder_layer_1.ln_1'
    """
    blocks = [n for n in layer_names(model) if n.endswith(".ln_1")]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no transformer blocks (no layer ending in '.ln_1'); for a "
                         f"CNN pick the last convolutional stage, e.g. 'layers.3' (sslkit.cam.layer_names(model))")
    return blocks[-1]


# ----------------------------------------------------------------------------------------------
# targets: what the map explains


class EmbeddingSimilarity:
    """A Grad-CAM target for a backbone without a classifier: cos(embedding - center, direction).

    Args:
        direction: (D,) e.g. a class prototype, or the embedding of another view of the image.
        center: (D,) subtracted from the embedding first (the mean feature of the images the
            prototypes came from), or None. Features after a ReLU all point the same way, so
            without centering "looks like a circle" and "looks like any image" are nearly the
            same direction.

    >>> target = EmbeddingSimilarity(torch.tensor([1.0, 0.0]))
    >>> float(target(torch.tensor([3.0, 0.0])))
    1.0
    """

    def __init__(self, direction: torch.Tensor, center: torch.Tensor | None = None):
        self.direction = F.normalize(direction.detach().flatten().float(), dim=0)
        self.center = None if center is None else center.detach().flatten().float()

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        out = model_output.flatten().float()  # (D,): one image's embedding
        if self.center is not None:
            out = out - self.center.to(out.device)
        return F.cosine_similarity(out, self.direction.to(out.device), dim=0)


@torch.no_grad()
def class_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                     center: torch.Tensor | None = None) -> torch.Tensor:
    """(C, D) the mean L2-normalised feature of each class: a concept embedding per class.

    ``center`` (D,), when given, is subtracted from every feature first (see ``EmbeddingSimilarity``).

    >>> class_prototypes(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), 2)
    tensor([[1., 0.],
            [0., 1.]])
    """
    f = features.float() - (0 if center is None else center.float())
    f = F.normalize(f, dim=1)
    missing = [k for k in range(num_classes) if not (labels == k).any()]
    if missing:
        raise ValueError(f"no labeled image of class(es) {missing}: a prototype needs at least one image per "
                         f"class; use e.g. ImageData.per_class(5)")
    protos = torch.stack([f[labels == k].mean(0) for k in range(num_classes)])
    return F.normalize(protos, dim=1)


@torch.no_grad()
def prototype_targets(backbone: nn.Module, labeled, labels: torch.Tensor, center: bool = True) -> list:
    """One ``EmbeddingSimilarity`` per image: similarity to the prototype of the class in ``labels``.

    Args:
        backbone: maps images to embeddings (B, D).
        labeled: a few labeled images (``ImageData``, e.g. ``train.per_class(10)``): the prototypes.
        labels: (N,) the class to explain for each image (its true class, or any other).
        center: subtract the labeled images' mean feature (recommended; see ``EmbeddingSimilarity``).
    """
    from .evaluate import extract_features

    features = extract_features(backbone, labeled)  # (M, D)
    mu = features.mean(0) if center else None
    protos = class_prototypes(features, labeled.labels, labeled.num_classes, center=mu)  # (C, D)
    return [EmbeddingSimilarity(protos[int(k)], center=mu) for k in labels]


@torch.no_grad()
def two_view_targets(backbone: nn.Module, images: torch.Tensor, params=None, seed: int = 0) -> list:
    """One ``EmbeddingSimilarity`` per image: similarity to the embedding of another random view of it.

    This is the question SimCLR trained the backbone on ("is this the same image?"), so the map
    shows what the backbone matches two views by. ``images``: uint8 (N, 3, H, W); ``params``: an
    ``sslkit.augment.AugmentParams`` (None: SimCLR's views).
    """
    from .augment import augment
    from .evaluate import predict

    views = augment(images, params, generator=seed)  # (N, 3, S, S) normalised
    z = predict(backbone, views, batch_size=256)  # (N, D)
    return [EmbeddingSimilarity(v) for v in z]


class ProbeClassifier(nn.Module):
    """A frozen backbone with a linear classifier on its features: (B, 3, H, W) -> class scores (B, C)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        return self.head(self.backbone(x))


def fit_probe(backbone: nn.Module, labeled, weight_decay: float = 1e-3) -> ProbeClassifier:
    """A linear probe (``sslkit.probe.fit_linear``) on ``backbone``'s features, as a torch classifier.

    The standardisation of the features is folded into the linear layer, so the result is a plain
    ``nn.Module`` that Grad-CAM can backpropagate through with ``ClassifierOutputTarget``.
    """
    from .evaluate import _device_of, extract_features
    from .probe import fit_linear, linear_head

    present = labeled.labels.unique().tolist()  # a class without images would get a head row that means nothing
    if present != list(range(labeled.num_classes)):
        raise ValueError(f"fit_probe needs labeled images of every one of the {labeled.num_classes} classes; got "
                         f"classes {present}. Use e.g. ImageData.per_class(10)")
    features = extract_features(backbone, labeled)  # (N, D)
    classifier = fit_linear(features, labeled.labels, weight_decay=weight_decay, num_classes=labeled.num_classes)
    head = linear_head(classifier)  # logits = ((f - mean) / std) @ W.T + b, as one nn.Linear on f
    return ProbeClassifier(backbone, head.to(_device_of(backbone))).eval()


# ----------------------------------------------------------------------------------------------
# ViTs


def vit_reshape(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B, 1 + h*w, D), class token first -> a feature map (B, D, h, w) for CAM.

    pytorch-grad-cam's ``vit_reshape_transform`` with the grid read from the tokens (the library's
    default, 14 x 14, is ViT-B/16 at 224 px; a ``TinyViT`` on 32 px images has 8 x 8), and an error
    that says what went wrong when the tokens are not a class token plus a square grid.

    >>> vit_reshape(torch.zeros(2, 1 + 64, 16)).shape
    torch.Size([2, 16, 8, 8])
    """
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    n = tokens.shape[1] - 1 if tokens.ndim == 3 else -1
    side = int(round(max(n, 0) ** 0.5))
    if tokens.ndim != 3 or side * side != n:
        raise ValueError(f"{tuple(tokens.shape)} is not a class token plus a square grid of patch tokens "
                         f"(B, 1 + h*w, D); is this the output of an encoder block of a ViT?")
    return vit_reshape_transform(tokens, height=side, width=side)


def check_gradients(model: nn.Module, layer_name: str, images: torch.Tensor, reshape=None,
                    need_gradient: bool = True) -> None:
    """Raise a clear error when ``layer_name`` cannot give a map: tokens without a reshape, or no gradient.

    For a ViT whose feature is the class token, the last encoder block's output reaches the
    output only through the class token, so its patch tokens get zero gradient; use the first
    LayerNorm of the last block (``vit_layer(model)``) with ``reshape=vit_reshape``.
    ``need_gradient=False`` checks only the shape (for EigenCAM and ScoreCAM).
    """
    layer = get_layer(model, layer_name)
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("out", o))
    try:
        with eval_mode(model), torch.enable_grad():
            out = model(images)
            act = saved.get("out")
            if not isinstance(act, torch.Tensor):
                raise ValueError(f"layer {layer_name!r} did not run on the input or does not output a tensor; pick a "
                                 f"layer from sslkit.cam.layer_names(model)")
            if act.ndim == 3 and reshape is None:
                hint = f" and the layer {vit_layer(model)!r}" if any(n.endswith(".ln_1") for n in layer_names(model)) else ""
                raise ValueError(f"layer {layer_name!r} outputs tokens {tuple(act.shape)}, not a feature map: pass "
                                 f"reshape=sslkit.cam.vit_reshape{hint}")
            if act.ndim == 2 or (act.ndim == 4 and act.shape[-2:] == (1, 1)):
                raise ValueError(f"layer {layer_name!r} outputs {tuple(act.shape)}: no spatial map left (it is after "
                                 f"the pooling); pick an earlier layer, e.g. the last convolutional stage")
            if not need_gradient:
                return
            grad = torch.autograd.grad(out.float().square().sum(), act, allow_unused=True)[0]
    finally:
        handle.remove()
    if grad is not None and act.ndim == 3:
        grad = grad[:, 1:]  # the patch tokens: what the map is made of
    if grad is None or grad.abs().max() == 0:
        hint = ""
        if any(n.endswith(".ln_1") for n in layer_names(model)):
            hint = f"; for a ViT use layer {vit_layer(model)!r} with reshape=sslkit.cam.vit_reshape"
        raise ValueError(f"layer {layer_name!r} gets zero gradient from the model's output, so Grad-CAM maps "
                         f"from it are empty{hint} (or a gradient-free method: eigencam, scorecam)")


def cls_attention_maps(vit: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Where the class token looks in the last block (DINO, Caron et al. 2021), at image resolution.

    ``vit``: an ``sslkit.models.TinyViT``; ``images``: normalised (N, 3, H, W). Returns (N, H, W)
    in [0, 1]: the class token's attention over the patches, averaged over heads, upsampled
    (bilinear) and scaled to [0, 1] like a CAM, so ``cam_in_mask`` scores it the same way.
    """
    from .evaluate import predict

    maps = predict(vit, images, batch_size, fn=vit.cls_attention)  # (N, h, w)
    maps = F.interpolate(maps[:, None].float(), size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _to_unit(maps.cpu())


def _to_unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map (N, H, W) min-max scaled to [0, 1], as pytorch-grad-cam scales its maps."""
    lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
    return (maps - lo) / (hi - lo + 1e-7)


# ----------------------------------------------------------------------------------------------
# maps


def compute_cams(model: nn.Module, images: torch.Tensor, layer_name: str, targets=None, method: str = "gradcam",
                 reshape=None, batch_size: int = 64) -> torch.Tensor:
    """Maps (N, H, W) in [0, 1] from pytorch-grad-cam, one per input image.

    Args:
        model: maps normalised images (N, 3, H, W) to outputs (class scores or embeddings).
        images: normalised float images (``sslkit.data.to_float``).
        layer_name: the layer whose activations are weighted (``layer_names(model)`` lists them).
        targets: one target per image (e.g. ``EmbeddingSimilarity``, pytorch-grad-cam's
            ``ClassifierOutputTarget``); None: the highest-scoring output (only meaningful for a
            classifier).
        method: one of ``CAM_METHODS``.
        reshape: for ViTs, ``vit_reshape``.
        batch_size: images per pass (ScoreCAM: masked copies per pass).

    The layer is checked first on two images (``check_gradients``): a wrong name, tokens without a
    reshape, or a layer with no gradient raise a ValueError that says what to use instead.

    >>> from sslkit.models import make_backbone
    >>> model = make_backbone("resnet_tiny")[0]
    >>> compute_cams(model, torch.randn(3, 3, 32, 32), "layers.3", method="eigencam").shape
    torch.Size([3, 32, 32])
    """
    cam_cls = _cam_class(method)
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be normalised floats (N, C, H, W), got {images.dtype} {tuple(images.shape)}; "
                         f"convert uint8 images with sslkit.to_float(images)")
    if not len(images):
        raise ValueError("no images to explain (images holds 0); give at least one")
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"{len(targets)} targets for {len(images)} images; give one target per image")
    layer = get_layer(model, layer_name)
    check_gradients(model, layer_name, images[:2], reshape, need_gradient=method not in GRADIENT_FREE)
    cams = []
    # not `with cam_cls(...) as cam`: its __exit__ prints and swallows an IndexError (a target class the model does
    # not have), which left fewer maps than images; here the error reaches the caller, and the hooks go either way
    with eval_mode(model):  # (the CAM puts the model in eval mode; each submodule's own mode comes back after)
        cam = cam_cls(model=model, target_layers=[layer], reshape_transform=reshape)
        try:
            if method == "scorecam":
                cam.batch_size = batch_size
            # ScoreCAM draws a tqdm bar per image on stderr: keep it out of the notebook
            quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
            with quiet:
                for start in range(0, len(images), batch_size):
                    t = None if targets is None else list(targets[start:start + batch_size])
                    cams.append(torch.from_numpy(cam(input_tensor=images[start:start + batch_size], targets=t)))
        finally:
            cam.activations_and_grads.release()
    return torch.cat(cams).float()


# ----------------------------------------------------------------------------------------------
# scores


def _check_sizes(cams: torch.Tensor, masks: torch.Tensor):
    if cams.shape != masks.shape:
        raise ValueError(f"maps {tuple(cams.shape)} and masks {tuple(masks.shape)} differ in size; compute the maps "
                         f"on the images the masks belong to (pytorch-grad-cam resizes maps to the input size)")


def cam_in_mask(cams: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over images of the fraction of the map's energy (sum) that falls inside the object mask.

    A map that ignores the object scores about the object's share of the image (``masks.float().mean()``).
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


def road_score(classifier: nn.Module, images: torch.Tensor, cams: torch.Tensor, labels: torch.Tensor,
               percentiles=(20, 40, 60, 80), seed: int = 0) -> float:
    """pytorch-grad-cam's ROAD (Rong et al. 2022): how much the maps' pixels matter to the classifier.

    Removes (by noisy linear imputation, not a black patch the model never saw) the most relevant
    and, separately, the least relevant pixels at each percentile, and returns the mean of
    (confidence drop when removing the least relevant - drop when removing the most relevant) / 2
    over the images: higher is better, about 0 for a map that points nowhere in particular.

    Args:
        classifier: images -> class scores (e.g. ``fit_probe(backbone, ...)`` or a supervised model).
        images: normalised (N, 3, H, W); cams: (N, H, W) in [0, 1]; labels: (N,) the explained class.
        percentiles: the shares of pixels removed (pytorch-grad-cam's default: 10, 20, ..., 90).
        seed: for the imputation's noise.
    """
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    if cams.shape != (len(images), *images.shape[-2:]) or len(labels) != len(images):
        raise ValueError(f"maps {tuple(cams.shape)}, images {tuple(images.shape)} and labels {tuple(labels.shape)} "
                         f"do not match: give one (H, W) map and one label per image")
    targets = [ClassifierOutputSoftmaxTarget(int(k)) for k in labels]
    with eval_mode(classifier), torch.random.fork_rng():  # the imputation adds noise: the same maps, the same score
        torch.manual_seed(seed)
        scores = ROADCombined(percentiles=list(percentiles))(images, cams.float().cpu().numpy(), targets, classifier)
    return float(scores.mean())
