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


#: A GSTIN of the right shape and check character that is no sample (made up for the tests).
OWN_GSTIN = "27AAECC1234F1Z4"
_PRODUCTION = {
    "CHARGEMITRA_APP_ENV": "production",
    "CHARGEMITRA_APP_SECRET_KEY": "k" * 40,
    "CHARGEMITRA_MQTT_PASSWORD": "p" * 40,
    "CHARGEMITRA_BILLING_SUPPLIER_GSTIN": OWN_GSTIN,
    # Staging (below) runs the dummy, whose UPI link must pay a VPA of ours.
    "CHARGEMITRA_PAYMENTS_UPI_VPA": "chargemitra.staging@okaxis",
}


def test_real_secrets_accepted_in_production() -> None:
    settings = load_settings(_PRODUCTION)
    assert settings.app.env is Environment.PRODUCTION
    assert settings.billing.supplier_gstin == OWN_GSTIN


@pytest.mark.parametrize(
    ("gstin", "why"),
    [
        (None, "sample"),  # the default: a documentation sample
        ("22AAAAA0000A1Z5", "sample"),  # the sample tutorials print
        ("27AAECC1234F1Z5", "check character"),  # one character off
    ],
)
def test_sample_or_invalid_gstin_refused_in_production(gstin: str | None, why: str) -> None:
    env = dict(_PRODUCTION)
    if gstin is None:
        del env["CHARGEMITRA_BILLING_SUPPLIER_GSTIN"]
    else:
        env["CHARGEMITRA_BILLING_SUPPLIER_GSTIN"] = gstin
    with pytest.raises(ConfigError, match=why) as caught:
        load_settings(env)
    assert caught.value.variable == "CHARGEMITRA_BILLING_SUPPLIER_GSTIN"
    # Development and staging may invoice as the sample (the demo, a test system).
    for other in ("development", "staging"):
        load_settings({**env, "CHARGEMITRA_APP_ENV": other})


def test_settings_are_immutable() -> None:
    settings = load_settings({})
    with pytest.raises(ValueError, match="frozen"):
        settings.mqtt.port = 1  # type: ignore[misc]


def test_the_sample_upi_vpa_is_refused_where_a_real_phone_may_pay() -> None:
    """Staging runs the dummy, whose QR code a real UPI app can scan: its payee must be ours."""
    staging = {
        "CHARGEMITRA_APP_ENV": "staging",
        "CHARGEMITRA_APP_SECRET_KEY": "a-real-long-random-secret-value",
        "CHARGEMITRA_MQTT_PASSWORD": "a-real-broker-password",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(staging)
    assert caught.value.variable == "CHARGEMITRA_PAYMENTS_UPI_VPA"
    own = {**staging, "CHARGEMITRA_PAYMENTS_UPI_VPA": "chargemitra.staging@okaxis"}
    assert load_settings(own).payments.upi_vpa == "chargemitra.staging@okaxis"
    # Development and test keep the sample; no link of ours is built for Razorpay.
    for env in ("development", "test"):
        load_settings({**staging, "CHARGEMITRA_APP_ENV": env})
    load_settings(
        {
            **staging,
            "CHARGEMITRA_PAYMENTS_PROVIDER": "razorpay",
            "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_ID": "rzp_live_Q8v2kXhT4mZp1a",
            "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_SECRET": "Zt4rQm9vX2kP8sLw1nB6cD3f",
            "CHARGEMITRA_PAYMENTS_RAZORPAY_WEBHOOK_SECRET": "h7Gk2pQz9vLm4xRt",
        }
    )
