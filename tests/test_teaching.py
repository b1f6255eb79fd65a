"""The from-scratch code the notebooks teach equals the library's version (micrograd-style).

Each notebook cell tagged ``teach:<name>`` is loaded on its own with ``sslkit.nbtools.load_teaching_cell``
and compared with lightly on the same inputs, so the lesson cannot drift from what the kit trains with.
"""
from pathlib import Path

import pytest
import torch

from sslkit.nbtools import load_teaching_cell

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"


@pytest.fixture(scope="module")
def ntxent():
    return load_teaching_cell(NOTEBOOKS / "02_contrastive.ipynb", "teach:ntxent")["ntxent"]


@pytest.mark.parametrize("batch_size", [2, 5, 32])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_ntxent_from_scratch_equals_lightly(ntxent, batch_size, temperature):
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(batch_size)
    z0 = torch.randn(batch_size, 16, generator=g, requires_grad=True)
    z1 = (z0.detach() + 0.5 * torch.randn(batch_size, 16, generator=g)).requires_grad_()  # views that roughly agree
    ours = ntxent(z0, z1, temperature)
    ours.backward()
    grads = z0.grad.clone(), z1.grad.clone()
    z0.grad = z1.grad = None
    theirs = NTXentLoss(temperature=temperature)(z0, z1)
    theirs.backward()
    assert ours.ndim == 0
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads, (z0.grad, z1.grad), rtol=1e-4, atol=1e-6)


def test_ntxent_rewards_views_that_agree(ntxent):
    # the positive pair is the same image's twin: matching views give a lower loss than shuffled ones
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    assert ntxent(z, z, 0.1) < ntxent(z, z[torch.randperm(16, generator=torch.Generator().manual_seed(1))], 0.1)
