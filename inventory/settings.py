"""Settings: ``DEVTRUST_*`` environment variables, ``DEVTRUST_*_FILE`` secrets, a TOML file.

Precedence, highest first: values passed in code, environment variables, ``_FILE``
variables, the TOML file named by ``DEVTRUST_CONFIG``, the defaults below.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from inventory.errors import ConfigurationError, quoted

ENV_PREFIX = "DEVTRUST_"
#: The computers-inventory versions ``jamf_api_version`` may name (jamf.client.API_VERSIONS).
JAMF_API_VERSIONS = (1, 2, 3, 4)


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
    # NoDecode: the environment gives "casper, itadmin" (or a JSON list), parsed below.
    jamf_ignored_usernames: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="accounts that are no one's (shared admin accounts): never a device's "
        "users; a list, or names separated by commas",
    )
    jamf_api_version: int | None = Field(
        None, description="computers-inventory version (1 to 4); default: probed, newest first"
    )
    jamf_max_connections: int = Field(5, ge=1, le=50, description="Jamf recommends at most 5")
    jamf_timeout: float = Field(30.0, gt=0, description="seconds per Jamf request")
    jamf_read_process_min: int = Field(
        10_000,
        ge=0,
        description="a full sync of at least this many records reads and maps them in a "
        "child process, beside the writes (0: never)",
    )
    jamf_sync_start_delay: str = Field(
        "1m", description="beat starts each schedule after a random delay up to this (0: now)"
    )
    jamf_sync_time_limit: str = Field("4h", description="a sync running longer is stopped")
    jamf_sync_lock_ttl: str = Field(
        "60s", description="a dead worker's sync lock frees itself after this long"
    )
    beat_lock_timeout: str = Field(
        "60s",
        description="on Redis, a standby beat takes over this long after the active one died",
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
    # NoDecode: the environment gives "127.0.0.1/32, 10.0.0.0/8" (or a JSON list).
    access_trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="addresses whose forwarded client certificate GET /v1/access/check "
        "believes (the proxies that verify the TLS handshake); a list, or CIDRs separated "
        "by commas",
    )
    access_certificate_header: str = Field(
        "X-SSL-Client-Cert",
        description="the one header GET /v1/access/check reads the client certificate from: "
        "X-SSL-Client-Cert (nginx), X-Forwarded-Tls-Client-Cert (Traefik) or "
        "X-Forwarded-Client-Cert (Envoy); the others are never read",
    )
    access_proxy_secret: SecretStr | None = Field(
        None,
        description="X-Devtrust-Proxy-Secret a proxy elsewhere sends with the certificate; "
        "unset: only access_trusted_proxies are believed",
    )
    lock_url: str | None = Field(
        None, description="Redis for the sync locks; default: the broker's, when it is Redis"
    )
    api_url: str = "http://127.0.0.1:8800"
    api_ca_file: Path | None = Field(
        None, description="the clients' trust store for api_url (PEM); default: the system's"
    )
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
    console_session_key_file: Path | None = Field(
        None,
        description="the web console's session key (32 random bytes or more); default: "
        "made under data_dir. Every replica of devtrust serve must read the same one",
    )
    tls_cert_file: Path | None = Field(None, description="devtrust serve's TLS certificate")
    tls_key_file: Path | None = Field(None, description="devtrust serve's TLS key (PEM)")
    tls_self_signed: bool = Field(
        False, description="devtrust serve: make a self-signed pair under data_dir/tls (demos)"
    )
    tls_client_ca_file: Path | None = Field(
        None, description="devtrust serve: ask for client certificates signed by this CA"
    )
    tls_terminated_by_proxy: bool = Field(
        False, description="TLS ends at a proxy in front: serve plain HTTP on any address"
    )
    agent_dir: Path | None = Field(
        None, description="the device agent's keys (TPM AK blob, macOS key); default data_dir/agent"
    )
    auto_migrate: bool = Field(True, description="upgrade the schema when a program starts")

    @field_validator("jamf_api_version")
    @classmethod
    def _known_jamf_api_version(cls, value: int | None) -> int | None:
        if value is not None and value not in JAMF_API_VERSIONS:
            choices = ", ".join(map(str, JAMF_API_VERSIONS[:-1])) + f" or {JAMF_API_VERSIONS[-1]}"
            raise PydanticCustomError(
                "jamf_api_version",
                "use {choices}, or leave it unset to probe, not {value}",
                {"choices": choices, "value": value},
            )
        return value

    @field_validator(
        "api_ca_file", "device_ca_key_file", "device_ca_cert_file", "console_session_key_file",
        "tls_cert_file", "tls_key_file", "tls_client_ca_file", "agent_dir", mode="before",
    )  # fmt: skip
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``DEVTRUST_API_CA_FILE=`` is no file, not the current directory."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("access_certificate_header")
    @classmethod
    def _certificate_header(cls, value: str) -> str:
        known = ("x-ssl-client-cert", "x-forwarded-tls-client-cert", "x-forwarded-client-cert")
        if value.strip().lower() not in known:
            raise ValueError(
                "use X-SSL-Client-Cert, X-Forwarded-Tls-Client-Cert or X-Forwarded-Client-Cert"
            )
        return value.strip()

    @field_validator("access_trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> list[str]:
        return parse_networks(value)

    @field_validator("jamf_ignored_usernames", mode="before")
    @classmethod
    def _usernames(cls, value: Any) -> list[str]:
        return parse_usernames(value)

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


# A login name: no spaces, commas or control characters (an email address is one).
_USERNAME = re.compile(r"[^\s,\x00-\x1f\x7f]{1,255}")


def parse_networks(value: Any) -> list[str]:
    """``access_trusted_proxies`` as CIDRs: a list, or text separated by commas; each an
    address or a network (``10.0.0.0/8``), refused by name when it is neither."""
    import ipaddress

    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
    else:
        items = value
    if not isinstance(items, list):
        raise ValueError("access_trusted_proxies must be a list of addresses or networks")
    out = []
    for item in items:
        entry = str(item).strip()
        if not entry:
            continue
        try:
            out.append(str(ipaddress.ip_network(entry, strict=False)))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (CIDR)") from None
    return out


def parse_usernames(value: Any) -> list[str]:
    """``jamf_ignored_usernames`` as a list of names: a TOML or JSON list, or text with
    the names separated by commas (``casper, itadmin``). Each is trimmed, blanks and
    repeats are dropped; anything that cannot be a login name is refused by name."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PydanticCustomError(
                    "usernames",
                    "not a JSON list ({error}): write names separated by commas",
                    {"error": exc.msg},
                ) from None
        else:
            value = text.split(",")
    if not isinstance(value, list | tuple):
        raise PydanticCustomError(
            "usernames", "expected a list of names or names separated by commas"
        )
    names: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise PydanticCustomError(
                "usernames", "{item} is not a name: write each name as text", {"item": repr(item)}
            )
        name = item.strip()
        if not name:
            continue
        if not _USERNAME.fullmatch(name):
            raise PydanticCustomError(
                "usernames",
                "{name} is not a login name: no spaces, commas or control characters, "
                "at most 255 characters",
                {"name": quoted(name)},
            )
        if name not in names:
            names.append(name)
    return names


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
