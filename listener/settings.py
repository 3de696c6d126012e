"""Listener settings: environment (LISTENER_*, DATABASE_URL) overridden by CLI flags."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from listener.errors import ConfigError


class Settings(BaseSettings):
    """Everything the listener can be told; the DSN is a secret and never printed."""

    model_config = SettingsConfigDict(env_prefix="LISTENER_", extra="ignore")

    dsn: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("LISTENER_DSN", "DATABASE_URL", "dsn")
    )
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    visibility_timeout_s: int = Field(default=30, ge=1)
    max_reads: int = Field(default=10, ge=2)
    poll_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    max_payload_bytes: int = Field(default=65_536, ge=256)
    # The server cancels a statement after this long (a lock wait, usually)...
    statement_timeout_s: float = Field(default=30.0, gt=0)
    # ...and the listener drops a connection whose call outlives this, for a middlebox that went silent.
    call_deadline_s: float = Field(default=45.0, gt=0)
    log_format: str = Field(default="text")
    # `listener status` counts a recent session_ledger.drain() run (pg_cron) as a live consumer.
    drain_counts_as_consumer: bool = Field(default=True)
    http_port: int | None = Field(default=None, ge=0, le=65535)
    # Loopback unless told otherwise: the dashboard and the probes are for this host's operators.
    http_host: str = Field(default="127.0.0.1", min_length=1)
    # Seconds an HTTP connection may stay silent, or take to send its request once it began.
    http_timeout_s: int = Field(default=5, ge=1)
    # Turns the dashboard on; without it `/` and the actions answer 404.
    dashboard_token: SecretStr | None = Field(default=None)

    @field_validator("log_format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("log format must be 'text' or 'json'")
        return value

    def require_dsn(self) -> str:
        """Return the DSN, or fail with a message saying how to give one."""
        if self.dsn is None or not self.dsn.get_secret_value().strip():
            raise ConfigError("no database given: pass --dsn or set LISTENER_DSN (or DATABASE_URL)")
        return self.dsn.get_secret_value()
