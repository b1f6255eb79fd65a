import pytest

import sslkit
from sslkit.config import PROFILES, Config, make_config, resolve_device


@pytest.fixture(autouse=True)
def no_profile_override(monkeypatch):
    monkeypatch.delenv("SSLKIT_PROFILE", raising=False)


@pytest.mark.parametrize("profile", PROFILES)
def test_every_profile_resolves(profile):
    cfg = make_config(profile)
    assert isinstance(cfg, Config) and cfg.profile == profile


def test_none_means_the_profiles_value_and_unknown_names_go_to_extra():
    smoke = make_config("smoke")
    cfg = make_config("smoke", num_epochs=None, batch_size=64, temperature=0.2, SEED=5)
    assert cfg.num_epochs == smoke.num_epochs and cfg.batch_size == 64 and cfg.seed == 5
    assert cfg.extra == {"temperature": 0.2}
    assert make_config("lesson").num_unlabeled > smoke.num_unlabeled


def test_environment_override_wins(monkeypatch):
    monkeypatch.setenv("SSLKIT_PROFILE", "smoke")
    assert make_config("lesson").profile == "smoke"


@pytest.mark.parametrize("kwargs, match", [
    ({"profile": "lessons"}, "unknown profile 'lessons'; choose one of: smoke, lesson, full"),
    ({"dataset": "cifar100"}, "unknown dataset 'cifar100'; choose one of: shapes, cifar10"),
    ({"device": "gpu"}, "unknown device 'gpu'; choose one of: auto, cpu, cuda, mps"),
    ({"batch_size": 0}, "batch_size=0 must be at least 1"),
])
def test_bad_names_list_the_valid_ones(kwargs, match):
    profile = kwargs.pop("profile", "smoke")
    with pytest.raises(ValueError, match=match):
        make_config(profile, **kwargs)


def test_devices():
    import torch
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU.*DEVICE = 'cpu'"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")


def test_config_is_exported_lazily():
    assert sslkit.make_config is make_config


def test_notebook_values_sit_between_profile_and_overrides(monkeypatch):
    from sslkit import recipes
    monkeypatch.setitem(recipes.NOTEBOOK_VALUES, "99_demo", {"lesson": {"batch_size": 64, "time_per_method_s": 90}})
    cfg = make_config("lesson", notebook="99_demo")
    assert cfg.batch_size == 64 and cfg.extra == {"time_per_method_s": 90}
    assert make_config("lesson", notebook="99_demo", batch_size=32).batch_size == 32
    assert make_config("smoke", notebook="99_demo").batch_size == make_config("smoke").batch_size
