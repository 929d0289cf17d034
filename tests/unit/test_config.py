"""roxd.toml: the shipped file documents every key with its default; bad input is one clear
error naming the file and the key."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from roxd.config import Config, load_config
from roxd.errors import ConfigError
from tests.conftest import REPO

pytestmark = pytest.mark.unit

SHIPPED = REPO / "config" / "roxd.toml"


def test_shipped_config_equals_the_built_in_defaults() -> None:
    assert dataclasses.replace(load_config(SHIPPED), source="x") == dataclasses.replace(
        Config(), source="x")


def test_shipped_config_shows_every_key() -> None:
    raw = tomllib.loads(SHIPPED.read_text())
    for section in dataclasses.fields(Config):
        if section.name in ("source", "alerts"):
            continue
        keys = {f.name for f in dataclasses.fields(section.type if isinstance(section.type, type)
                                                   else type(getattr(Config(), section.name)))}
        assert set(raw[section.name]) == keys, section.name


@pytest.mark.parametrize(("text", "needle"), [
    ("[nope]\nx = 1\n", "unknown section [nope]"),
    ("[daemon]\nlog_levle = 'info'\n", "unknown key daemon.log_levle"),
    ("[sensor]\nringbuf_pages = 'many'\n", "sensor.ringbuf_pages must be an integer"),
    ("[sensor]\nringbuf_pages = 100\n", "power of two"),
    ("[enforce]\nisolate_fallback = 'explode'\n", "isolate_fallback must be one of"),
    ("[enforce]\nisolate_allow = ['10.0.0.0/33']\n", "isolate_allow"),
    ("[rules]\npaths = 'rules'\n", "rules.paths must be a list of strings"),
    ("[daemon\n", "config"),
    ("[containers]\ncontainerd_address = 'containerd.sock'\n", "containerd_address must be"),
    ("[containers]\npodman_url = '/run/podman/podman.sock'\n", "podman_url must be"),
])
def test_bad_config_is_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "roxd.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)


def test_missing_default_config_means_built_in_defaults(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    import roxd.config as config_module

    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert load_config(None) == Config()
