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


def test_every_bounded_setting_documents_its_range():
    from dataclasses import fields

    text = DOCS.read_text()
    for f in fields(Settings):
        low, high = f.metadata["min"], f.metadata["max"]
        if low is None and high is None:
            continue
        row = next(line for line in text.splitlines() if f"`SWELL_{f.name.upper()}`" in line)

        def shown(x: float) -> str:
            return str(int(x)) if x == int(x) else str(x)

        bounds = f"{shown(low)} to {shown(high)}" if high is not None else f"at least {shown(low)}"
        assert f"(range: {bounds})" in row, (f.name, row)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SWELL_PORT", "99999", "SWELL_PORT has value 99999: it must be between 1 and 65535."),
        ("SWELL_PORT", "0", "SWELL_PORT has value 0: it must be between 1 and 65535."),
        (
            "SWELL_SEAL_CHECK_SECONDS",
            "-5",
            "SWELL_SEAL_CHECK_SECONDS has value -5.0: it must be between 0.05 and 86400.",
        ),
        ("SWELL_SEAL_CHECK_SECONDS", "nan", "SWELL_SEAL_CHECK_SECONDS has value 'nan'."),
        ("SWELL_RETENTION_DAYS", "-1", "SWELL_RETENTION_DAYS has value -1: it must be between"),
    ],
)
def test_values_out_of_range_are_refused_with_the_range(name, value, message):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({name: value})
    assert caught.value.message.startswith(message)


def test_settings_built_in_code_are_checked_too():
    with pytest.raises(ConfigError, match="SWELL_BLOCK_BYTES"):
        Settings(block_bytes=10)
