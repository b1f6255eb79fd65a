"""Recipes: what each lesson trains, in one place, used alike by the notebooks and ``python -m sslkit.train``.

A recipe names a method and, per profile, every value its training needs beyond the profile's: network, views,
optimizer, learning rate and schedule, weight decay, batch size, head sizes, momentum, and the number of epochs.
Each value is written once, with the reason for it; the runs that chose them are in ``docs/tuning_history.md``.
Every training is planned in epochs (no time budget), so the same seed gives the same numbers on any machine
(bit-identical on the same one); a time budget is only an opt-in cap (``time_budget_s``, a notebook's
``TIME_BUDGET_S``).

``make_config(profile, recipe=NAME, ...)`` (``sslkit.config``) resolves a recipe into a ``Config``, and
``build(method, cfg)`` makes the run's network, method and views from it:
the caller's values > the notebook's own (``NOTEBOOK_VALUES``) > the recipe's > the profile's > ``Config``'s
defaults. ``python -m sslkit.train METHOD`` trains the recipe named like the method unless ``--recipe`` names
another, and ``cfg.recipe`` (in every results file) says which one a run used.

>>> recipe("simclr", "lesson")["temperature"], recipe("simclr", "lesson")["backbone"]
(0.2, 'resnet_tiny')
>>> recipe("mae", "smoke")["backbone"]
'vit_tiny'
>>> sorted(RECIPES)[:4]
['barlowtwins', 'byol', 'dino', 'jigsaw']
"""

from __future__ import annotations

import dataclasses

# ------------------------------------------------------------------------------------------------------------
# pieces several recipes share (each recipe below says which it uses)

# notebook 01's network: two pretext trainings must fit in minutes on a laptop CPU
PRETEXT_NET = dict(
    backbone="resnet_tiny",  # the smallest ResNet of sslkit.models: many steps per minute on 2 cores
    width=8,  # channels of the first stage (8, 16, 32, then last_width): fast, and enough for 10 shape classes
    last_width=128,  # a wide last stage on 4x4 maps: the features the kNN and probe read
)

# notebook 01's optimisation, one for both tasks (the notebook trains them from one config)
PRETEXT_SCHEDULE = dict(
    lr=5e-3,  # AdamW; above the profile's 3e-3: more progress in a short run
    warmup_epochs=2.0,  # a third of the 6 epochs: with one, jigsaw's kNN stayed under +15 on some seeds
)

# the joint-embedding lessons' network and views on 2 CPU cores (notebooks 02 and 03)
LAPTOP_NET = dict(
    PRETEXT_NET,
    view_size=24,  # training views of 24 px: about 1.8x the steps per second of 32 px; evaluated at 32 px
    min_crop=0.7,  # big crops: a 32 px shape cut to a corner no longer says which shape it is
    grayscale=0.8,  # mostly grey views: colour is a shortcut on generated shapes (each class has any colour)
    jitter=1.0,  # colour-jitter strength s of SimCLR's paper (brightness, contrast, saturation 0.8 s, hue 0.2 s)
)

# the lesson profile's plan for one joint-embedding method: about five minutes on 2 CPU cores (5-8 s per epoch)
FORTY_EPOCHS = dict(
    num_epochs=40,  # planned, not timed: a slower laptop takes longer and sees the same numbers
    batch_size=128,  # small batches: more steps per second of training (256 gave a lower kNN in the same time)
)

# the same 40 epochs in batches of 64: twice the steps, each half the images (1.1x to 1.3x the time). SimCLR, MoCo,
# DINO and BYOL train so at the lesson profile: in batches of 128 each fell short of its target on a seed that this
# cleared (docs/tuning_history.md, notebooks 02 and 03)
FORTY_EPOCHS_SMALL_BATCHES = dict(
    FORTY_EPOCHS,
    batch_size=64,  # more steps per epoch: smaller batches learned more per epoch in notebook 02's batch-size sweep
)

# notebook 02's plan for SimCLR and MoCo: on seeds 0-2 it cleared kNN 0.72 for SimCLR and kept MoCo within 10 points
# of it, where batches of 128 with a cosine decay did not
CONTRASTIVE_PLAN = dict(
    FORTY_EPOCHS_SMALL_BATCHES,
    lr_schedule="constant",  # the lr stays at its peak after the warm-up: the cosine decay stopped learning too early
)

# AdamW for the methods without a predictor (SimCLR, MoCo, DINO, Barlow Twins, VICReg) at the lesson profile
ADAMW = dict(
    lr=5e-3,  # peak after the warm-up; 3e-3 learned more slowly in a 5-minute run
    weight_decay=0.05,  # strong decoupled decay keeps the features from growing; it lifted every method here
)

# the methods with a predictor (BYOL, SimSiam) train with SGD as SimSiam's paper and lightly's CIFAR-10 benchmark:
# under AdamW their predictions collapsed on these views
PREDICTOR_SGD = dict(
    optimizer="sgd",  # momentum 0.9 (make_optimizer's default)
    lr_schedule="constant",  # the lr stays at its peak after the warm-up: decaying it stalled both in 40 epochs
    predictor_lr_scale=4,  # the predictor learns 4x faster than the rest, so it keeps up with the moving target
)

SMOKE_NET = dict(width=8, num_unlabeled=256)  # CI: a narrow network on few images, numbers meaningless

# the views of notebook 02's recipe where a profile sets no others (smoke, and full: untested on this machine's CPUs)
VIEWS = dict(min_crop=0.7, grayscale=0.8, jitter=1.0)

# ------------------------------------------------------------------------------------------------------------
# the recipes: name -> the method, the notebook that teaches it, and its values per profile

RECIPES: dict[str, dict] = {
    "rotation": dict(
        method="rotation", notebook="01_pretext",
        smoke=dict(width=8, batch_size=32),
        lesson=dict(
            PRETEXT_NET,
            num_epochs=6,  # about 2 minutes on 2 cores (jigsaw: 40 s): two pretext trainings in under 3 minutes
            batch_size=32,  # 32 images x 4 rotations = 128 inputs per step (jigsaw: 32 images of 4 tiles)
            **PRETEXT_SCHEDULE,
        ),
        full=dict(batch_size=256),  # half the profile's images, 4 inputs each
    ),
    "jigsaw": dict(
        method="jigsaw", notebook="01_pretext",
        smoke=dict(width=8, batch_size=64),
        lesson=dict(PRETEXT_NET, num_epochs=6,  # about 50 s on 2 cores
                    batch_size=32,  # small batches, more steps: 17-18 points over the baselines on seeds 0-2, where
                    # batches of 64 gave 14.5-17.3 on one CPU kind (docs/tuning_history.md, 01)
                    **PRETEXT_SCHEDULE),
        full=dict(),
    ),
    "simclr": dict(
        method="simclr", notebook="02_contrastive",
        smoke=dict(SMOKE_NET, **VIEWS, temperature=0.2, hidden_dim=512),
        lesson=dict(
            LAPTOP_NET, **CONTRASTIVE_PLAN, **ADAMW,
            temperature=0.2,  # NT-Xent's temperature: the peak of notebook 02's 6-epoch sweep in batches of 128 (in
            # batches of 64 that sweep peaks at 0.1 on seeds 0-2; 0.1 for the 40 epochs is not screened yet)
            hidden_dim=1024,  # a projection head twice lightly's 512 wide: it lifted kNN on every seed tried
        ),
        full=dict(VIEWS, temperature=0.2, hidden_dim=512),
    ),
    "moco": dict(
        method="moco", notebook="02_contrastive",
        smoke=dict(SMOKE_NET, temperature=0.2, hidden_dim=512, queue_size=2048, **VIEWS),
        lesson=dict(
            LAPTOP_NET, **CONTRASTIVE_PLAN, **ADAMW, temperature=0.2, hidden_dim=1024,  # SimCLR's: a fair comparison
            queue_size=2048,  # 16 steps of keys (two batches of 64 each): more than SimCLR's 126, few enough to stay fresh
            symmetric=True,  # both views query the other's key, as the MoCo authors' CIFAR-10 code: twice the signal
        ),
        full=dict(VIEWS, temperature=0.2, hidden_dim=512, queue_size=8192),  # 16 batches of 512
    ),
    "byol": dict(
        method="byol", notebook="03_non_contrastive",
        smoke=dict(SMOKE_NET, **VIEWS, **PREDICTOR_SGD,
                   lr=0.12, weight_decay=2.5e-4, target_momentum=0.99),
        lesson=dict(
            LAPTOP_NET, **FORTY_EPOCHS_SMALL_BATCHES,  # with batches of 128 seed 1 fell 5 points short of the target
            **PREDICTOR_SGD,
            jitter=0.5,  # BYOL's paper's colour strength; notebook 03's methods all share these views
            lr=0.24,  # twice SimSiam's: BYOL's slowly moving target keeps it stable at the faster step
            weight_decay=2.5e-4,  # with lr 0.24: the decay per step (lr x weight decay) of SimSiam's 0.12 x 5e-4
            target_momentum=0.9,  # where the EMA target's momentum starts (a cosine to 1): a faster target early
        ),
        full=dict(VIEWS, target_momentum=0.99, predictor_lr_scale=1),  # AdamW at the profile's lr
    ),
    "simsiam": dict(
        method="simsiam", notebook="03_non_contrastive",
        smoke=dict(SMOKE_NET, **VIEWS, **PREDICTOR_SGD,
                   lr=0.06, weight_decay=5e-4),
        lesson=dict(LAPTOP_NET, **FORTY_EPOCHS, **PREDICTOR_SGD, jitter=0.5,
                    lr=0.12,  # the run learns faster at twice lightly's benchmark lr, and stays stable
                    weight_decay=5e-4),  # the paper's CIFAR value
        full=dict(VIEWS, optimizer="sgd", lr=0.06, weight_decay=5e-4, predictor_lr_scale=1),  # lightly's benchmark
    ),
    "dino": dict(
        method="dino", notebook="03_non_contrastive",
        smoke=dict(SMOKE_NET, **VIEWS, batch_size=64,
                   lr_schedule="constant", teacher_temp=0.04, num_local=2),
        lesson=dict(
            LAPTOP_NET, **FORTY_EPOCHS_SMALL_BATCHES,  # DINO's steps are slow (a 1024-d head): twice as many, smaller
            **ADAMW, jitter=0.5,
            lr_schedule="constant",  # a decaying lr stops DINO before its loss leaves ln K in 40 epochs
            teacher_temp=0.04,  # the teacher's sharpening (lightly's example; the student's 0.1)
            target_momentum=0.98,  # where the teacher's momentum starts (a cosine to 1): lightly's 0.99 is made for
            # hundreds of epochs; in 40 a teacher that follows the student faster learns more on every seed
            num_local=0,  # no small local crops: 24 px views leave little to crop, and each crop costs a forward
        ),
        full=dict(VIEWS, teacher_temp=0.04, num_local=2),
    ),
    "barlowtwins": dict(
        method="barlowtwins", notebook="03_non_contrastive",
        smoke=dict(SMOKE_NET, **VIEWS, lambda_param=0.005),
        lesson=dict(LAPTOP_NET, **FORTY_EPOCHS, **ADAMW, jitter=0.5,
                    lambda_param=0.0025,  # half lightly's weight of the off-diagonal terms, with weight decay 0.05
                    lr_schedule="constant"),  # as DINO, BYOL and SimSiam: a cosine to 0 stops it learning too early
        full=dict(VIEWS, lambda_param=0.005),  # lightly's
    ),
    "vicreg": dict(
        method="vicreg", notebook="03_non_contrastive",
        smoke=dict(SMOKE_NET, **VIEWS),
        lesson=dict(LAPTOP_NET, **FORTY_EPOCHS, **ADAMW, jitter=0.5),
        full=dict(VIEWS),
    ),
    "mae": dict(
        method="mae", notebook="04_masked",
        smoke=dict(backbone="vit_tiny", hidden_dim=32, num_layers=2, num_heads=2, decoder_dim=32, decoder_depth=1,
                   decoder_heads=2, mask_ratio=0.75, norm_pix_loss=True, num_unlabeled=256, batch_size=64, lr=1e-3,
                   weight_decay=0.05, betas=(0.9, 0.95), lr_schedule="constant"),
        lesson=dict(
            backbone="vit_tiny",  # MAE masks patch tokens: it needs a ViT
            hidden_dim=128, num_layers=4, num_heads=4,  # a 4-layer ViT of 128 channels: ~0.8 M parameters
            decoder_dim=64, decoder_depth=1, decoder_heads=4,  # a light decoder: the encoder must do the work
            mask_ratio=0.75,  # MAE's paper: hide 3 of 4 patches
            norm_pix_loss=True,  # predict each patch normalised by its own mean and std (the paper's better target)
            num_epochs=14,  # about 5 minutes on 2 cores (21 s per epoch)
            batch_size=64,  # small batches: more steps for a ViT that learns slowly
            lr=1e-3,  # AdamW's peak for a ViT (lightly's MAE example: 1.5e-4 x batch / 256 at batch 4096)
            weight_decay=0.05,  # MAE's paper
            warmup_epochs=0.5,  # a short warm-up: the run is 14 epochs
            betas=(0.9, 0.95),  # MAE's paper: a shorter memory of the second moment
            lr_schedule="constant",  # the lr stays after the warm-up: a cosine to 0 stopped learning too early
        ),
        full=dict(backbone="vit_tiny", hidden_dim=128, num_layers=4, num_heads=4, decoder_dim=64, decoder_depth=1,
                  decoder_heads=4, mask_ratio=0.75, norm_pix_loss=True),
    ),
}

# ------------------------------------------------------------------------------------------------------------
# what a notebook needs beyond its recipes: notebook -> profile -> values (names that are not Config fields go to
# cfg.extra, e.g. a sweep run's epochs). Every training is planned in epochs or steps; the seconds in the comments
# are what they take on 2 CPU cores. The runs that chose them: docs/tuning_history.md, a section per notebook.

NOTEBOOK_VALUES: dict[str, dict[str, dict]] = {
    "02_contrastive": {"smoke": dict(sweep_epochs=1, temperatures=(0.1, 0.2), batch_sizes=(64, 128)),
                       "lesson": dict(sweep_epochs=6,  # a sweep run: about 80 s, a seventh of the method's 40 epochs
                                      temperatures=(0.05, 0.1, 0.2, 0.5, 1.0), batch_sizes=(32, 512)),
                       "full": dict(sweep_epochs=50, temperatures=(0.05, 0.1, 0.2, 0.5, 1.0),
                                    batch_sizes=(32, 512))},
    "03_non_contrastive": {"smoke": dict(no_stopgrad_epochs=1),
                           "lesson": dict(no_stopgrad_epochs=10)},  # SimSiam without stop-gradient: it only has to
    # show the collapse, which comes within its first epochs (about 50 s)
    "04_masked": {"smoke": dict(finetune_epochs=1, sweep_epochs=1),
                  "lesson": dict(finetune_epochs=20,  # two fine-tunings (MAE, scratch), about 60 s each
                                 finetune_lr=3e-3, finetune_batch_size=64,
                                 layer_decay=0.75,  # MAE's paper: each layer down learns at 0.75 x the one above
                                 sweep_epochs=2)},  # a mask ratio of the sweep: about 45 s
    "05_scaling": {"smoke": dict(width=8, num_unlabeled=256, num_train=200, num_test=100, batch_size=64, num_epochs=2,
                                 measure_steps=2, warmup_steps=1, measure_compile=False, ddp_epochs=1),
                   "lesson": dict(backbone="resnet_tiny", width=8, num_unlabeled=2048, num_train=2000, num_test=1000,
                                  batch_size=128, num_epochs=2,
                                  measure_steps=10, warmup_steps=2,  # timed steps after untimed warm-up steps
                                  measure_compile=True, ddp_epochs=4)},
    "06_gradcam": {"smoke": dict(width=8, num_unlabeled=256, num_train=200, num_test=48, batch_size=64,
                                 ssl_epochs=1, shortcut_epochs=1, pretext_epochs=1, supervised_epochs=1,
                                 vit_epochs=1, vit_images=64, vit_batch_size=32, scorecam_images=8, road_images=4,
                                 shots=5, explorer_images=4),
                   "lesson": dict(PRETEXT_NET, view_size=24, num_test=500, batch_size=128, lr=5e-3,
                                  ssl_epochs=13,  # the fallback SSL training when notebook 02's is absent: ~90 s
                                  shortcut_epochs=4,  # SimCLR without colour jitter: ~30 s
                                  pretext_epochs=1,  # rotation prediction: ~16 s
                                  supervised_epochs=11,  # ~25 s
                                  vit_epochs=1, vit_images=2000)},  # the fallback ViT when notebook 04's is absent: ~15 s
    "07_finetune": {"smoke": dict(width=8, num_unlabeled=256, counts=(1, 10), ft_steps=3, ft_steps_all=3),
                    "lesson": dict(PRETEXT_NET, view_size=24,
                                   num_epochs=14,  # the fallback SSL training when notebook 02's is absent: ~100 s
                                   batch_size=128, lr=5e-3,
                                   counts=(1, 5, 10, 50),  # labels per class of the label-efficiency curve
                                   ft_steps=150, ft_steps_all=300)},
    "08_your_data": {"smoke": dict(width=8, num_unlabeled=256, num_train=200, num_test=100, num_epochs=1,
                                   crop_scale=(0.5, 1.0), grayscale_prob=0.5, temperature=0.2,
                                   sweep_grid={"METHOD": ["simclr", "byol"], "NUM_EPOCHS": [1]}),
                     "lesson": dict(backbone="resnet_tiny", width=8,
                                    num_epochs=6,  # about 30 s on 2 cores
                                    batch_size=128, lr=5e-3, num_unlabeled=5000, num_train=2000, num_test=1000,
                                    crop_scale=(0.5, 1.0), grayscale_prob=0.5, temperature=0.2,
                                    sweep_grid={"METHOD": ["simclr", "byol"], "NUM_EPOCHS": [2, 8]})},
}


def recipe(name: str, profile: str = "lesson") -> dict:
    """Recipe ``name``'s values at ``profile`` (a copy; ``method`` and ``notebook`` name what it trains and where).

    >>> recipe("byol", "lesson")["optimizer"], recipe("byol", "lesson")["predictor_lr_scale"]
    ('sgd', 4)
    >>> recipe("simclrr")
    Traceback (most recent call last):
    ...
    ValueError: unknown recipe 'simclrr'; choose one of: barlowtwins, byol, dino, jigsaw, mae, moco, rotation, simclr, simsiam, vicreg
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(sorted(RECIPES))}")
    entry = RECIPES[name]
    if profile not in entry:
        raise ValueError(f"recipe {name!r} has no values for profile {profile!r}; it has: "
                         f"{', '.join(p for p in ('smoke', 'lesson', 'full') if p in entry)}")
    return {**entry[profile]}


def recipes_for(method: str) -> list[str]:
    """The recipes that train ``method`` (the first is the one named like it).

    >>> recipes_for("simclr")
    ['simclr']
    """
    names = [n for n, r in RECIPES.items() if r["method"] == method]
    return sorted(names, key=lambda n: n != method)


# methods whose predictions collapse under AdamW on these views (docs/tuning_history.md, 03_non_contrastive): a run
# that names no optimizer (a sweep, notebook 08's experiment) trains them with their recipe's
OWN_OPTIMIZER = {"simsiam": ("optimizer", "lr", "weight_decay", "lr_schedule")}


def with_own_optimizer(method: str, cfg):
    """``cfg`` with ``method``'s own optimizer from its recipe, if it needs one and ``cfg`` names none.

    >>> import sslkit
    >>> c = with_own_optimizer("simsiam", sslkit.make_config("smoke"))
    >>> c.extra["optimizer"], c.lr, c.weight_decay
    ('sgd', 0.06, 0.0005)
    >>> with_own_optimizer("simsiam", sslkit.make_config("smoke", optimizer="adamw")).lr
    0.003
    """
    if method not in OWN_OPTIMIZER or "optimizer" in cfg.extra:
        return cfg
    values = {k: v for k, v in recipe(method, cfg.profile).items() if k in OWN_OPTIMIZER[method]}
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in values.items() if k in fields},
                               extra={**cfg.extra, **{k: v for k, v in values.items() if k not in fields}})


# ------------------------------------------------------------------------------------------------------------
# building a run from its Config: the same in the notebooks, the sweeps and the shell

RECIPE_VIEW_KNOBS = ("min_crop", "grayscale", "jitter")  # the knobs of sslkit.augment.recipe_views


def init_parameters(fn) -> set[str]:
    import inspect
    return {name for name, p in inspect.signature(fn).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"self", "backbone", "feature_dim"}


def check_knob_types(fn, knobs: dict) -> None:
    """A knob whose default is a number must be a number (or a tuple of them), a flag True or False:
    ``temperature="abc"`` (a typo in ``--set`` or a parameters cell) stops here with its name, not inside a loss.

    >>> def f(temperature=0.1, normalize=True, name=None): ...
    >>> check_knob_types(f, {"temperature": 0.2, "normalize": False, "name": "x"})
    >>> check_knob_types(f, {"temperature": "abc"})
    Traceback (most recent call last):
    ValueError: temperature='abc' must be a number (its default is 0.1)
    """
    import inspect
    import numbers

    params = inspect.signature(fn).parameters
    for name, value in knobs.items():
        default = params[name].default if name in params else None
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{name}={value!r} must be True or False (its default is {default})")
        elif isinstance(default, numbers.Real):  # or numbers, e.g. target_momentum=(0.99, 1.0), a start and an end
            values = value if isinstance(value, (tuple, list)) and value else (value,)
            if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in values):
                raise ValueError(f"{name}={value!r} must be a number (its default is {default})")


def views_of(cfg):
    """The training views ``cfg`` asks for: a recipe's (``recipe_views``: ``min_crop``, ``grayscale``, ``jitter``
    at ``view_size``) when it names any of them, else ``AugmentParams`` at ``view_size`` (default: the images'
    size); ``AugmentParams`` fields in ``cfg.extra`` (``crop_scale``, ``grayscale_prob``, ...) win over both.
    None when ``cfg`` names none of them (``build`` then gives ``AugmentParams`` at ``view_size``, and DINO keeps
    its own views).

    >>> import sslkit
    >>> views_of(sslkit.make_config("lesson", recipe="simclr")).crop_scale
    (0.7, 1.0)
    >>> views_of(sslkit.make_config("smoke", crop_scale=(0.5, 1.0))).grayscale_prob
    0.2
    """
    from .augment import AugmentParams, recipe_views

    fields = {f.name for f in dataclasses.fields(AugmentParams)}
    given = {k: v for k, v in cfg.extra.items() if k in fields}
    if any(k in cfg.extra for k in RECIPE_VIEW_KNOBS):
        base = recipe_views(cfg)
    elif given:
        base = AugmentParams(image_size=cfg.extra.get("view_size", cfg.image_size))
    else:
        return None
    return dataclasses.replace(base, **given)


def build(method_name: str, cfg, distributed: bool = False):
    """The method of a run: ``make_backbone`` then the method, with ``cfg.seed``'s initial weights.

    Knobs in ``cfg.extra`` go where their name fits: the backbone's constructor (``width``, ``last_width``; a ViT's
    ``hidden_dim``, ``num_layers``), the method's (``temperature``, ``queue_size``, ``predictor_lr_scale``), and the
    views (``views_of``: ``augment`` of a two-view method, DINO's global views; without view knobs DINO keeps its
    own, lightly's ``DINOTransform``'s). With ``distributed``, methods that can gather negatives across processes do
    (``gather_distributed=True``: SimCLR's NT-Xent sees every process's batch).

    >>> import sslkit
    >>> m = build("simclr", sslkit.make_config("smoke", recipe="simclr"))
    >>> type(m).__name__, m.criterion.temperature, m.augment.crop_scale
    ('SimCLR', 0.2, (0.7, 1.0))
    """
    import torch

    from .augment import AugmentParams
    from .methods import method_class
    from .models import BACKBONES, backbone_arguments, make_backbone

    cls = method_class(method_name)
    init = init_parameters(cls.__init__)
    backbone_knobs = backbone_arguments(cfg)
    method_knobs = {k: v for k, v in cfg.extra.items() if k in init}
    views, size = views_of(cfg), cfg.extra.get("view_size", cfg.image_size)  # views may be smaller than images
    if "image_size" in init:  # DINO: the size of its own global views
        method_knobs.setdefault("image_size", size)
    view_arg = "augment" if "augment" in init else "global_views" if views and "global_views" in init else None
    if view_arg:
        method_knobs.setdefault(view_arg, views or AugmentParams(image_size=size))
    if distributed and "gather_distributed" in init:
        method_knobs.setdefault("gather_distributed", True)
    check_knob_types(BACKBONES[cfg.backbone][0], backbone_knobs)
    check_knob_types(cls.__init__, method_knobs)
    torch.manual_seed(cfg.seed)  # the same initial weights in every process (DDP also copies rank 0's)
    backbone, dim = make_backbone(cfg.backbone, **backbone_knobs)
    return cls(backbone, dim, **method_knobs)
