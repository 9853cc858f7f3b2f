"""Lazy ``module:attribute`` references: imported on first call, once, with errors that name them."""

from __future__ import annotations

import importlib
import re
import sys
import textwrap

import pytest

from repoman import BackendRegistry
from repoman.errors import PluginError
from repoman.lazy import LazyReference


@pytest.fixture
def heavy(tmp_path, monkeypatch):
    """The name of an importable module, not imported yet."""
    (tmp_path / "lazy_heavy.py").write_text(
        textwrap.dedent(
            """
            FACTOR = 3

            class Scaler:
                def __init__(self, value):
                    self.value = value * FACTOR

                @staticmethod
                def describe(path, parameters):
                    return f"described {path}"
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "lazy_heavy"
    sys.modules.pop("lazy_heavy", None)


def test_a_reference_imports_its_module_on_the_first_call_and_keeps_what_it_found(
    heavy, monkeypatch
):
    scaler = LazyReference(f"{heavy}:Scaler")
    assert heavy not in sys.modules
    assert scaler(2).value == 6
    assert heavy in sys.modules
    monkeypatch.setattr(
        importlib, "import_module", lambda name: pytest.fail(f"{name} looked up again")
    )
    assert scaler(5).value == 15


def test_a_dotted_attribute_is_followed_as_an_entry_point_would(heavy):
    assert LazyReference(f"{heavy}:Scaler.describe")("m/1/x", {}) == "described m/1/x"


@pytest.mark.parametrize(
    "reference", ["lazy_heavy", "lazy_heavy:", ":Scaler", "a:b:c", "a b:c", "a.:b"]
)
def test_a_malformed_reference_fails_at_once(reference):
    with pytest.raises(
        PluginError, match=re.escape("expected a reference like 'package.module:name'")
    ):
        LazyReference(reference)


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("lazy_nowhere.backend:Backend", "ModuleNotFoundError: No module named 'lazy_nowhere'"),
        ("lazy_heavy:Missing", "AttributeError: module 'lazy_heavy' has no attribute 'Missing'"),
        ("lazy_heavy:FACTOR", "is not callable: 3"),
    ],
)
def test_a_reference_that_cannot_be_called_fails_at_its_first_call_naming_it(
    heavy, reference, message
):
    lazy = LazyReference(reference)
    with pytest.raises(PluginError) as caught:
        lazy(1)
    assert str(caught.value).startswith(f"{reference} ")
    assert message in str(caught.value)


def test_the_registry_takes_references_for_factory_and_describe(heavy):
    registry = BackendRegistry()
    registry.register("scaler", f"{heavy}:Scaler", describe=f"{heavy}:Scaler.describe")
    assert heavy not in sys.modules
    [spec] = registry.specs()
    assert spec.describe is not None and spec.describe("m/1/x", {}) == "described m/1/x"
    assert spec.factory(2).value == 6


def test_the_registry_refuses_a_malformed_reference_when_it_is_registered():
    with pytest.raises(PluginError, match="found 'not a reference'"):
        BackendRegistry().register("broken", "not a reference")
    with pytest.raises(PluginError, match="found 'nocolon'"):
        BackendRegistry().register("broken", "pkg:Backend", describe="nocolon")


def test_a_missing_dependency_names_the_command_that_installs_it(tmp_path, monkeypatch):
    (tmp_path / "lazy_needs_absent.py").write_text("import lazy_absent_dependency\n\nclass B: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    lazy = LazyReference("lazy_needs_absent:B", "pip install 'repoman[absent]'")
    with pytest.raises(PluginError) as caught:
        lazy()
    message = str(caught.value)
    assert message.startswith(
        "this backend needs the package 'lazy_absent_dependency', which is not installed; "
        "install it with: pip install 'repoman[absent]' (lazy_needs_absent:B cannot be imported"
    ), message
    # a reference to a module that is not there at all is a typo, not a missing extra
    nowhere = LazyReference("lazy_nowhere:B", "pip install 'repoman[absent]'")
    with pytest.raises(PluginError) as caught:
        nowhere()
    assert "pip install" not in str(caught.value)
    sys.modules.pop("lazy_needs_absent", None)
