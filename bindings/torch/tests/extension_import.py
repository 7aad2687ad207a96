"""Import of the extension for the tests: skip where torch or the extension is not installed,
but fail loudly where it is installed and broken (a skipped suite would hide that)."""
import importlib

import pytest


def import_extension():
    pytest.importorskip("torch")
    try:
        return importlib.import_module("radix_attention_torch")
    except ModuleNotFoundError as e:
        if e.name == "radix_attention_torch":
            pytest.skip("radix_attention_torch is not installed "
                        "(pip install --no-build-isolation ./bindings/torch)",
                        allow_module_level=True)
        raise
