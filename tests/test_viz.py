import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from sslkit.data import load_dataset  # noqa: E402
from sslkit.viz import augmentation_explorer, dataset_tour, has_widget_frontend, show_images, simclr_views  # noqa: E402


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes", "train", n=40, seed=0), load_dataset("shapes", "shifted", n=40, seed=0)


def test_views_are_random_but_seeded(shapes):
    images = shapes[0].images[:6]
    x0, x1 = simclr_views(images, seed=1)
    assert x0.shape == (6, 3, 32, 32) and x0.dtype == torch.float32 and 0 <= x0.min() and x0.max() <= 1
    assert not torch.allclose(x0, x1)
    assert torch.equal(simclr_views(images, seed=1)[0], x0)
    same, _ = simclr_views(images, crop_scale=1.0, color_jitter=0.0, grayscale=0.0, seed=1)
    flips_back = torch.where((same - images / 255).abs().amax(dim=(1, 2, 3), keepdim=True) < 0.01, same, same.flip(-1))
    assert torch.allclose(flips_back, images / 255, atol=0.01), "full crops without jitter are the image or its mirror"


def test_figures(shapes):
    train, shifted = shapes
    fig = dataset_tour(train, shifted, per_class=2)
    assert len(fig.axes) == train.num_classes * 2 * 3
    assert show_images(train.images[:5], titles=list("abcde"), masks=train.masks[:5]) is not None


def test_explorer_is_static_without_a_widget_frontend(shapes):
    assert not has_widget_frontend()
    fig = augmentation_explorer(shapes[0].images[:4])
    assert isinstance(fig, matplotlib.figure.Figure)


def test_explorer_is_a_widget_in_jupyterlab(monkeypatch):
    """In a kernel started by Jupyter's server (JPY_SESSION_NAME set), the cell displays a widget."""
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("JPY_SESSION_NAME", "00_welcome.ipynb")  # what jupyter_server gives its kernels
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sslkit\nd = sslkit.load_dataset('shapes', 'train', n=8)\n"
        "box = sslkit.viz.augmentation_explorer(d.images[:4])\n"
        "print(type(box).__name__, [c.description for c in box.children[0].children])"))
    NotebookClient(nb, kernel_name="sslkit", timeout=120).execute()
    outputs = nb.cells[0].outputs
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
    assert "VBox ['crop scale', 'colour jitter', 'blur prob.']" in "".join(o.get("text", "") for o in outputs)
