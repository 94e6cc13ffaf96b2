"""Notifier settings (``JOBREAPER_NOTIFY_*``).

The webhook URL is a secret (a Slack incoming webhook carries its token in the
path): it comes from a file (``webhook_file``, e.g. a mounted Secret) or the
environment (``JOBREAPER_NOTIFY_WEBHOOK``), never from the command line, and is
held as a :class:`SecretStr` so that no repr or log line shows it. Logs name
only its :func:`~services.notify.webhook.endpoint` (scheme and host).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

WHERE = (
    "put it in a file and pass --webhook-file PATH (env: JOBREAPER_NOTIFY_WEBHOOK_FILE; "
    "e.g. a mounted Kubernetes Secret), or set JOBREAPER_NOTIFY_WEBHOOK"
)


class NotifySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JOBREAPER_NOTIFY_", extra="ignore")

    webhook: SecretStr | None = Field(
        default=None,
        description="URL the alerts are POSTed to (JSON); a secret: from the environment, "
        "never a flag. Or webhook_file.",
    )
    webhook_file: str | None = Field(
        default=None,
        description="File holding the webhook URL (a mounted Secret), read at start.",
    )
    group_id: str = Field(
        default="jobreaper-notify",
        description="Kafka consumer group: its committed offsets say what was delivered.",
    )
    failing_after: int = Field(
        default=3,
        ge=1,
        description="Alert when a step's command attempt N (the killer re-issues a failed "
        "step with attempt + 1) failed, N >= this.",
    )
    remind_every: int = Field(
        default=10,
        ge=1,
        description="A step that stays forbidden or failing alerts again every N attempts.",
    )
    request_timeout_s: float = Field(default=10.0, gt=0)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    retry_after_max_s: float = Field(
        default=300.0, gt=0, description="A 429's Retry-After is honoured up to this."
    )

    @model_validator(mode="after")
    def _one_webhook(self) -> NotifySettings:
        given = self.webhook is not None and self.webhook.get_secret_value().strip()
        if self.webhook_file and given:
            raise ValueError(
                "the webhook URL is given twice, in JOBREAPER_NOTIFY_WEBHOOK and in the file "
                f"{self.webhook_file}: keep one"
            )
        if self.webhook_file:
            try:
                with open(self.webhook_file, encoding="utf-8") as handle:
                    text = handle.read().strip()
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(
                    f"cannot read the webhook file {self.webhook_file}: {reason}"
                ) from exc
            if not text:
                raise ValueError(f"the webhook file {self.webhook_file} is empty")
            self.webhook = SecretStr(text)
        elif not given:
            raise ValueError(f"no webhook URL: {WHERE}")
        problem = url_problem(self.url)
        if problem:
            raise ValueError(problem)
        return self

    @property
    def url(self) -> str:
        """The webhook URL itself: pass it to the HTTP client, never to a log."""
        assert self.webhook is not None
        return self.webhook.get_secret_value().strip()

    @property
    def origin(self) -> str:
        """Where the URL came from (for the start-up log)."""
        return f"file {self.webhook_file}" if self.webhook_file else "JOBREAPER_NOTIFY_WEBHOOK"


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable webhook, without repeating any of it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "the webhook URL is not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "the webhook URL must start with http:// or https://"
    if not host:
        return "the webhook URL names no host"
    if any(c.isspace() for c in url):
        return "the webhook URL contains whitespace"
    return None
