"""Migration 0006 on an inventory that already has devices enrolled with one EK: it does
not fail, they stay enrolled, unbound (their EK was never stored), and from then on the
index refuses a second device for one binding."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from inventory import db as dbmod
from tests.services import scratch_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        with scratch_postgres_database("devtrust_binding") as url:
            yield url


ENROLLED = text(
    "INSERT INTO devices (id, os_type, asset_tag, enroll_status, owner, credential_id, "
    "credential_public_key, credential_ek_cert_serial, credential_attestation_type, "
    "create_time, update_time) VALUES (:id, 'linux', :tag, 'enrolled', 'alice', :id, "
    ":ak, 'ek-serial-1', 'tpm_ekcert', :now, :now)"
)


def test_devices_already_sharing_an_ek_survive_the_upgrade_unbound(empty_url: str) -> None:
    engine = dbmod.create_db_engine(empty_url)
    try:
        dbmod.upgrade(engine, "0005_device_posture")
        now = datetime(2026, 12, 1, tzinfo=UTC).replace(tzinfo=None)
        with engine.begin() as conn:
            for n in (1, 2):  # one TPM enrolled as two devices, as before this revision
                conn.execute(
                    ENROLLED, {"id": f"dev-{n}", "tag": f"LNX-{n}", "ak": b"ak", "now": now}
                )
        dbmod.upgrade(engine)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT enroll_status, credential_binding FROM devices ORDER BY id")
            ).all()
        assert [tuple(r) for r in rows] == [("enrolled", None), ("enrolled", None)]
        with engine.begin() as conn:
            conn.execute(text("UPDATE devices SET credential_binding = 'ek' WHERE id = 'dev-1'"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("UPDATE devices SET credential_binding = 'ek' WHERE id = 'dev-2'"))
        dbmod.downgrade(engine, "0005_device_posture")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 2
    finally:
        engine.dispose()
