from pathlib import Path

import pytest

from inventory.db import parse_database_url
from inventory.errors import ConfigurationError
from inventory.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("DEVTRUST_"):
            monkeypatch.delenv(key)


def test_default_database_is_sqlite_under_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVTRUST_DATA_DIR", str(tmp_path / "data"))
    assert load_settings().database_url_value == f"sqlite:///{tmp_path / 'data' / 'devtrust.db'}"


def test_environment_beats_file_secret_beats_toml(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "devtrust.toml"
    config.write_text(
        'jamf_url = "https://toml.example"\njamf_client_id = "from-toml"\napi_url = "http://toml"\n'
    )
    secret = tmp_path / "client_id"
    secret.write_text("from-file\n")
    monkeypatch.setenv("DEVTRUST_CONFIG", str(config))
    monkeypatch.setenv("DEVTRUST_JAMF_CLIENT_ID_FILE", str(secret))
    monkeypatch.setenv("DEVTRUST_API_URL", "http://env")
    settings = load_settings()
    assert settings.jamf_url == "https://toml.example"
    assert settings.jamf_client_id == "from-file"
    assert settings.api_url == "http://env"


def test_secrets_are_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVTRUST_JAMF_CLIENT_SECRET", "hunter2")
    settings = load_settings()
    assert "hunter2" not in repr(settings)
    assert settings.jamf_client_secret is not None
    assert settings.jamf_client_secret.get_secret_value() == "hunter2"


def test_unreadable_secret_file_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVTRUST_USER_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigurationError, match="DEVTRUST_USER_TOKEN_FILE: cannot read"):
        load_settings()


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEVTRUST_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigurationError, match="DEVTRUST_CONFIG names .*nope.toml"):
        load_settings()


def test_invalid_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVTRUST_COLLECTED_HISTORY_LIMIT", "0")
    with pytest.raises(ConfigurationError, match="invalid setting collected_history_limit"):
        load_settings()


def test_postgres_urls_use_psycopg_3_and_others_are_refused() -> None:
    assert parse_database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    with pytest.raises(ConfigurationError, match="unsupported database 'mysql'"):
        parse_database_url("mysql://u@h/db")
    with pytest.raises(ConfigurationError, match="invalid DEVTRUST_DATABASE_URL"):
        parse_database_url("not a url")


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The file DEVTRUST_CONFIG names; each test writes it."""
    path = tmp_path / "devtrust.toml"
    monkeypatch.setenv("DEVTRUST_CONFIG", str(path))
    return path


def test_a_config_file_key_that_names_no_setting_is_refused_with_a_suggestion(
    config: Path,
) -> None:
    config.write_text('jamf_url = "https://toml.example"\nbrokr_url = "redis://x"\n')
    with pytest.raises(ConfigurationError) as refused:
        load_settings()
    assert str(refused.value) == (
        f"DEVTRUST_CONFIG {config}: unknown setting 'brokr_url' (did you mean 'broker_url'?)"
    )
    config.write_text("nothing_like_it = 1\n")
    with pytest.raises(ConfigurationError, match=r"unknown setting 'nothing_like_it'$"):
        load_settings()


def test_a_config_file_that_does_not_parse_is_named(config: Path) -> None:
    config.write_text("jamf_url = [\n")
    with pytest.raises(ConfigurationError, match=f"cannot read DEVTRUST_CONFIG {config}: "):
        load_settings()


def test_a_data_directory_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = load_settings(data_dir=blocker / "data")
    with pytest.raises(ConfigurationError, match=f"cannot create {blocker / 'data'} for the data"):
        settings.database_url_value  # noqa: B018 (the property makes the directory)


def test_the_data_directory_is_made_for_the_default_database(tmp_path: Path) -> None:
    from inventory.db import Database

    url = load_settings(data_dir=tmp_path / "new" / "data").database_url_value
    Database.connect(url).close()
    assert (tmp_path / "new" / "data" / "devtrust.db").is_file()


def test_a_sqlite_url_in_a_missing_directory_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    from inventory.db import Database, create_db_engine

    missing = tmp_path / "nonexistent" / "dir"
    url = f"sqlite:///{missing / 'x.db'}"
    with pytest.raises(
        ConfigurationError, match=f"{missing / 'x.db'} is in a directory that does not exist"
    ):
        Database.connect(url)
    assert not (tmp_path / "nonexistent").exists()
    create_db_engine(url, create_dir=True).dispose()  # what `devtrust db upgrade` does
    assert missing.is_dir()


@pytest.mark.parametrize("query", ["?mode=ro", "?mode=ro&uri=true", "?timeout=1"])
def test_a_sqlite_url_with_options_is_refused_in_one_line(query: str) -> None:
    with pytest.raises(ConfigurationError, match="a SQLite URL takes no options") as refused:
        parse_database_url(f"sqlite:////tmp/x.db{query}")
    assert "mode=ro is not supported" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "name", ["DEVTRUST_API_CA_FILE", "DEVTRUST_TLS_CERT_FILE", "DEVTRUST_CONSOLE_SESSION_KEY_FILE"]
)
def test_an_empty_file_setting_is_unset_not_the_current_directory(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "")
    field = name.removeprefix("DEVTRUST_").lower()
    assert getattr(load_settings(), field) is None
