"""Settings: ``DEVTRUST_*`` environment variables, ``DEVTRUST_*_FILE`` secrets, a TOML file.

Precedence, highest first: values passed in code, environment variables, ``_FILE``
variables, the TOML file named by ``DEVTRUST_CONFIG``, the defaults below.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from inventory.errors import ConfigurationError, quoted

ENV_PREFIX = "DEVTRUST_"


class FileEnvSource(PydanticBaseSettingsSource):
    """``DEVTRUST_JAMF_CLIENT_SECRET_FILE=/run/secrets/jamf`` reads the secret from that file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        var = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(var)
        if not path:
            return None, field_name, False
        try:
            return Path(path).read_text(encoding="utf-8").strip(), field_name, False
        except OSError as exc:
            raise ConfigurationError(f"{var}: cannot read {path}: {exc.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class ConfigFileSource(TomlConfigSettingsSource):
    """The TOML file ``DEVTRUST_CONFIG`` names. A key that names no setting is refused: a
    typo would otherwise leave the default in force without a word."""

    def __init__(self, settings_cls: type[BaseSettings], path: str) -> None:
        try:
            super().__init__(settings_cls, toml_file=path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"cannot read DEVTRUST_CONFIG {path}: {exc}") from None
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read DEVTRUST_CONFIG {path}: {exc.strerror}"
            ) from None
        known = settings_cls.model_fields
        for key in self.toml_data:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigurationError(
                    f"DEVTRUST_CONFIG {path}: unknown setting {quoted(key)}{hint}"
                )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(Path(".devtrust"), description="where the SQLite database and keys live")
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; default: a SQLite file under data_dir"
    )
    broker_url: str | None = None
    result_backend: str | None = None
    broker_visibility_timeout: str = Field(
        "5m", description="Redis: a message a dead worker took comes back after this long"
    )
    jamf_url: str | None = None
    jamf_client_id: str | None = None
    jamf_client_secret: SecretStr | None = None
    jamf_username: str | None = None
    jamf_password: SecretStr | None = None
    jamf_source_name: str = Field("jamf", description="the source name devices are synced under")
    jamf_inventory: list[dict[str, Any]] | None = Field(
        None, description="inventory entries: name, filter_rsql, sync periods, on_missing, ..."
    )
    jamf_mobile_devices: bool = Field(False, description="also sync iOS devices")
    jamf_ignored_usernames: list[str] = Field(
        default_factory=list,
        description="accounts that are no one's (shared admin accounts): never a device's users",
    )
    jamf_api_version: int | None = Field(None, description="computers-inventory version; probed")
    jamf_max_connections: int = Field(5, ge=1, le=50, description="Jamf recommends at most 5")
    jamf_timeout: float = Field(30.0, gt=0, description="seconds per Jamf request")
    jamf_sync_start_delay: str = Field(
        "1m", description="beat starts each schedule after a random delay up to this (0: now)"
    )
    jamf_sync_time_limit: str = Field("4h", description="a sync running longer is stopped")
    jamf_sync_lock_ttl: str = Field(
        "60s", description="a dead worker's sync lock frees itself after this long"
    )
    jamf_webhook_username: str = Field(
        "jamf", description="the Basic auth user Jamf Pro's webhooks send (with the password)"
    )
    jamf_webhook_password: SecretStr | None = Field(
        None, description="Basic auth password of POST /v1/webhooks/jamf; unset: no Basic auth"
    )
    jamf_webhook_header: str = Field(
        "X-Devtrust-Webhook-Token", description="the header Jamf Pro's header auth sends"
    )
    jamf_webhook_token: SecretStr | None = Field(
        None, description="the value of jamf_webhook_header; unset: no header auth"
    )
    lock_url: str | None = Field(
        None, description="Redis for the sync locks; default: the broker's, when it is Redis"
    )
    api_url: str = "http://127.0.0.1:8800"
    user_token: SecretStr | None = None
    tpm_tcti: str = "device:/dev/tpmrm0"
    dmi_dir: Path = Path("/sys/class/dmi/id")
    collected_history_limit: int = Field(10, ge=1, le=1000)
    enrollment_token_ttl: str = "1h"  # noqa: S105 (a duration, not a secret)
    challenge_ttl: str = Field(
        "60s", description="how long a device has to answer an enrollment challenge"
    )
    auto_enroll_wait: float = Field(
        5.0, ge=0, le=60, description="seconds a login waits for its auto-enrollment verdict"
    )
    auto_enroll_attempts: int = Field(
        10, ge=1, description="auto-enrollment attempts per user per auto_enroll_window"
    )
    auto_enroll_window: str = Field("1m", description="the window auto_enroll_attempts counts in")
    device_cert_ttl: str = Field("1h", description="how long a device-bound certificate lasts")
    device_ca_key_file: Path | None = Field(
        None, description="the device CA's key (PEM, mode 0600); default: made under data_dir"
    )
    device_ca_cert_file: Path | None = Field(None, description="the device CA's certificate")
    agent_dir: Path | None = Field(
        None, description="the device agent's keys (TPM AK blob, macOS key); default data_dir/agent"
    )
    auto_migrate: bool = Field(True, description="upgrade the schema when a program starts")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [
            init_settings,
            env_settings,
            FileEnvSource(settings_cls),
        ]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise ConfigurationError(
                    f"DEVTRUST_CONFIG names {config_file}, which is not a file"
                )
            sources.append(ConfigFileSource(settings_cls, config_file))
        return tuple(sources)

    @property
    def agent_dir_value(self) -> Path:
        return self.agent_dir if self.agent_dir is not None else self.data_dir / "agent"

    @property
    def database_url_value(self) -> str:
        """DEVTRUST_DATABASE_URL, or the SQLite file under the data directory, which is
        created here: the data directory is devtrust's own to make, a directory named in
        an explicit URL is not (``inventory.db.create_db_engine``)."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        directory = self.data_dir.resolve()
        if not directory.is_dir():
            from inventory.db import make_directory

            make_directory(directory, "the data directory (DEVTRUST_DATA_DIR)")
        return f"sqlite:///{directory / 'devtrust.db'}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one readable line."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "settings"
        raise ConfigurationError(f"invalid setting {field}: {first['msg']}") from None
    except ValueError as exc:  # a TOML file that does not parse
        raise ConfigurationError(f"cannot read DEVTRUST_CONFIG: {exc}") from None
