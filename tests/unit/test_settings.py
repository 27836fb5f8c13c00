from __future__ import annotations

from pathlib import Path

import pytest

from swell.errors import ConfigError
from swell.settings import Settings, describe

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_every_setting_is_documented_with_its_default():
    text = DOCS.read_text()
    for env, default, _ in describe():
        assert f"`{env}`" in text
        row = next(line for line in text.splitlines() if f"`{env}`" in line)
        shown = default.lower() if default in {"True", "False"} else default
        assert (f"`{shown}`" if shown else "| (empty) |") in row, (env, default)


def test_environment_overrides_defaults_and_flags_override_environment():
    env = {"SWELL_PORT": "9001", "SWELL_TRUST_FORWARDED_FOR": "yes", "SWELL_DATA_DIR": "/x"}
    settings = Settings.from_env(env)
    assert settings.port == 9001
    assert settings.trust_forwarded_for is True
    assert settings.data_dir == Path("/x")
    assert Settings.from_env(env, port=7000).port == 7000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SWELL_PORT", "abc"),
        ("SWELL_PORT", "-1"),
        ("SWELL_PORT", "\u0668\u0660\u0668\u0660"),  # Arabic-Indic digits, which int() reads
        ("SWELL_SEAL_CHECK_SECONDS", "\uff15"),
        ("SWELL_TRUST_FORWARDED_FOR", "maybe"),
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})
