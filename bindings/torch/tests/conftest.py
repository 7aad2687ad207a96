"""Shared fixtures. Nothing is imported here at module level: each test module skips itself
where torch, the extension or a GPU is missing (see extension_import.py)."""
import pytest


@pytest.fixture
def gen():
    """A fresh, seeded CPU generator per test: failures reproduce."""
    torch = pytest.importorskip("torch")
    g = torch.Generator()
    g.manual_seed(1234)
    return g
