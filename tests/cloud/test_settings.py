"""Settings: typed, grouped, validated once; placeholder secrets refused outside development."""

from __future__ import annotations

import pytest

from cloud.errors import ConfigError
from cloud.settings import Environment, load_settings


def test_defaults_load_in_development() -> None:
    settings = load_settings({})
    assert settings.app.env is Environment.DEVELOPMENT
    assert settings.mqtt.port == 1883


def test_values_come_from_grouped_variables() -> None:
    settings = load_settings({"CHARGEMITRA_MQTT_PORT": "8883", "CHARGEMITRA_INGEST_BATCH_MAX": "7"})
    assert settings.mqtt.port == 8883
    assert settings.ingest.batch_max == 7


def test_bad_value_names_variable_and_value() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"CHARGEMITRA_MQTT_PORT": "eighty"})
    assert caught.value.variable == "CHARGEMITRA_MQTT_PORT"
    assert "eighty" in str(caught.value)


@pytest.mark.parametrize("env", ["production", "staging", "test"])
def test_placeholder_secret_refused_outside_development(env: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "CHARGEMITRA_APP_ENV": env,
                "CHARGEMITRA_APP_SECRET_KEY": "a-real-long-random-secret-value",
                "CHARGEMITRA_MQTT_PASSWORD": "changeme",
            }
        )
    assert caught.value.variable == "CHARGEMITRA_MQTT_PASSWORD"


def test_real_secrets_accepted_in_production() -> None:
    settings = load_settings(
        {
            "CHARGEMITRA_APP_ENV": "production",
            "CHARGEMITRA_APP_SECRET_KEY": "k" * 40,
            "CHARGEMITRA_MQTT_PASSWORD": "p" * 40,
        }
    )
    assert settings.app.env is Environment.PRODUCTION


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.mqtt.port = 1  # type: ignore[misc]
