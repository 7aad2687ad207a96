"""Shared fixtures: tests skip cleanly where torch, the extension or a GPU is missing."""
import pytest

torch = pytest.importorskip("torch")
ra = pytest.importorskip("radix_attention_torch")

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def gen():
    """A fresh, seeded CPU generator per test: failures reproduce."""
    g = torch.Generator()
    g.manual_seed(1234)
    return g
