"""Kafka client settings: SASL that holds together, the password from a file, never shown.

That they work against a broker with SASL/SCRAM and ACLs: tests/integration/kafka_acls/."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.runtime.kafka import client_kwargs
from services.runtime.settings import KafkaSettings

SCRAM = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "jobreaper-killer",
}


def test_sasl_scram_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBREAPER_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("JOBREAPER_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("JOBREAPER_KAFKA_SASL_USERNAME", "jobreaper-killer")
    monkeypatch.setenv("JOBREAPER_KAFKA_SASL_PASSWORD", "s3cret pass")
    settings = KafkaSettings()
    kwargs = client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "jobreaper-killer"
    assert kwargs["sasl_plain_password"] == "s3cret pass"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.model_dump())


def test_the_password_from_a_file_keeps_all_but_one_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(" pa ss \n", newline="")
    settings = KafkaSettings(**SCRAM, sasl_password_file=str(secret))
    assert client_kwargs(settings)["sasl_plain_password"] == " pa ss "
    assert "pa ss" not in repr(settings)
    secret.write_bytes(b"pass\r\n")
    assert (
        client_kwargs(KafkaSettings(**SCRAM, sasl_password_file=str(secret)))["sasl_plain_password"]
        == "pass"
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs JOBREAPER_KAFKA_SASL_MECHANISM"),
        (
            {**SCRAM},
            "needs JOBREAPER_KAFKA_SASL_PASSWORD (or _SASL_PASSWORD_FILE)",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_password": "p"},
            "needs JOBREAPER_KAFKA_SASL_USERNAME",
        ),
        (
            {"sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u", "sasl_password": "p"},
            "the security protocol is PLAINTEXT",
        ),
        ({**SCRAM, "sasl_password_file": "/nonexistent/jr"}, "cannot read the SASL password"),
    ],
)
def test_sasl_settings_that_do_not_hold_together_are_refused(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KafkaSettings(**values)  # type: ignore[arg-type]


def test_an_error_never_shows_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic prints a model validator's whole input by default: the password too."""
    monkeypatch.setenv("JOBREAPER_KAFKA_SASL_PASSWORD", "topsecret")
    for bad in ({"security_protocol": "SASL_SSL"}, {"request_timeout_ms": 1}):
        with pytest.raises(ValidationError) as refused:
            KafkaSettings(**bad)  # type: ignore[arg-type]
        assert "topsecret" not in str(refused.value)  # what a traceback or log shows


def test_a_password_given_twice_or_empty_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("file-secret")
    with pytest.raises(ValidationError, match="given twice") as twice:
        KafkaSettings(**SCRAM, sasl_password="env-secret", sasl_password_file=str(secret))
    assert "secret" not in str(twice.value).replace("SASL_PASSWORD", "")
    secret.write_text("\n")
    with pytest.raises(ValidationError, match="is empty"):
        KafkaSettings(**SCRAM, sasl_password_file=str(secret))


def test_plaintext_needs_nothing() -> None:
    kwargs = client_kwargs(KafkaSettings())
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert "sasl_mechanism" not in kwargs
