from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from chanlite.layers import LayerConfigError, LayerNotFound, get_layer, installed_layers, registry
from chanlite.layers.memory import MemoryLayer


def test_memory_url() -> None:
    layer = get_layer("memory://")
    assert isinstance(layer, MemoryLayer)
    assert (layer.capacity, layer.expiry, layer.group_expiry) == (100, 60, 86400)


def test_memory_url_options() -> None:
    layer = get_layer("memory://?capacity=2&expiry=5&group_expiry=30")
    assert (layer.capacity, layer.expiry, layer.group_expiry) == (2, 5.0, 30.0)


def test_unknown_option_is_named() -> None:
    with pytest.raises(LayerConfigError, match="Unknown option 'capasity'"):
        get_layer("memory://?capasity=2")


def test_malformed_option_is_named() -> None:
    with pytest.raises(LayerConfigError, match="Malformed value 'lots' for option 'capacity'"):
        get_layer("memory://?capacity=lots")


def test_bad_capacity_value() -> None:
    with pytest.raises(LayerConfigError, match="capacity must be at least 1"):
        get_layer("memory://?capacity=0")


def test_not_a_url() -> None:
    with pytest.raises(LayerConfigError, match="A layer URL looks like"):
        get_layer("memory")


def test_unknown_known_scheme_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_entry_points", lambda scheme: [])
    with pytest.raises(
        LayerNotFound,
        match=r"pip install chanlite-redis \(from a chanlite checkout: pip install -e "
        r"plugins/chanlite-redis\)",
    ):
        get_layer("redis://localhost:6379/0")


def test_unknown_scheme_names_the_entry_point_group() -> None:
    with pytest.raises(LayerNotFound, match=r"entry point .nats. in the group .chanlite\.layers."):
        get_layer("nats://localhost")


def test_two_plugins_for_one_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    a = EntryPoint("dup", "pkg_a:Layer", registry.GROUP)
    b = EntryPoint("dup", "pkg_b:Layer", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda scheme: [a, b])
    with pytest.raises(LayerConfigError, match=r"pkg_a:Layer.*pkg_b:Layer"):
        get_layer("dup://")


def test_entry_point_that_is_not_a_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    ep = EntryPoint("odd", "collections:OrderedDict", registry.GROUP)
    monkeypatch.setattr(registry, "_entry_points", lambda scheme: [ep])
    with pytest.raises(LayerConfigError, match=r"not a chanlite\.layers\.BaseLayer subclass"):
        get_layer("odd://")


def test_memory_is_registered_as_an_entry_point() -> None:
    # The built-in layer is found the same way plugins are.
    assert any(
        ep.value == "chanlite.layers.memory:MemoryLayer" for ep in registry._entry_points("memory")
    )
    assert ("memory", "chanlite") in {(s, d) for s, d, _ in installed_layers()}


def test_a_scheme_typo_says_did_you_mean_and_lists_the_installed_schemes() -> None:
    with pytest.raises(LayerNotFound) as info:
        get_layer("memroy://")
    installed = ", ".join(f"{row[0]}://" for row in installed_layers())
    assert str(info.value) == (
        "No channel layer is installed for the scheme 'memroy'; did you mean memory://? "
        f"Installed schemes: {installed}"
    )


def test_a_typo_of_a_known_plugin_scheme_is_not_install_advice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "installed_layers", lambda: [("memory", "chanlite", "1")])
    with pytest.raises(LayerNotFound) as info:
        get_layer("sqllite:///x.db")
    assert str(info.value) == (
        "No channel layer is installed for the scheme 'sqllite'; did you mean sqlite:// "
        "(pip install chanlite-sqlite (from a chanlite checkout: pip install -e "
        "plugins/chanlite-sqlite))? Installed schemes: memory://"
    )
