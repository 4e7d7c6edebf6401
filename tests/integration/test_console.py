"""The web console in a real browser: Debian's Chromium driven by Playwright, against a
real ``devtrust serve`` and a real ``devtrust worker`` (the embedded file queue, no
broker), on an inventory synced from the Jamf simulator.

One browser, one server, one worker and one synced fleet for the whole module: the
fixtures are module-scoped, and each test opens its own browser context (cookies apart).
Every request any page sends is recorded, and must go to the devtrust server only.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from sqlalchemy import select

from inventory.db import Database
from inventory.domain import CollectedData, Device, OSType, Role
from inventory.models import DeviceRow
from inventory.services import devices, users
from tests.processes import DEVTRUST, free_port, simulator, started, worker

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FLEET = 60
INVENTORY = [{"name": "default", "on_missing": "DELETE", "page_size": 50}]


@dataclass
class Site:
    base: str
    env: dict[str, str]
    db: Database
    credentials: dict[str, str]
    drifted: Device  # synced, with collected data that does not match its profile
    enrolled: Device  # synced, enrolled by hand in the database
    erins: Device  # registered by hand, assigned to the editor erin
    requests: list[str] = field(default_factory=list)


def _env(tmp: Path, jamf: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DEVTRUST_")}
    return {
        **clean,
        "DEVTRUST_DATA_DIR": str(tmp / "data"),
        "DEVTRUST_DATABASE_URL": f"sqlite:///{tmp / 'devtrust.db'}",
        "DEVTRUST_JAMF_URL": jamf,
        "DEVTRUST_JAMF_CLIENT_ID": "devtrust",
        "DEVTRUST_JAMF_CLIENT_SECRET": "devtrust-secret",
        "DEVTRUST_JAMF_SYNC_START_DELAY": "0",
        "DEVTRUST_JAMF_INVENTORY": json.dumps(INVENTORY),
    }


def _seed(db: Database) -> tuple[Device, Device, Device]:
    """After the first sync: a drifted Mac, an enrolled one, and the editor's device."""
    with db.uow().read() as uow:
        rows = uow.session.scalars(
            select(DeviceRow)
            .where(DeviceRow.os_type == "macos", DeviceRow.profile_os_version.is_not(None))
            .order_by(DeviceRow.asset_tag)
            .limit(2)
        ).all()
        drifted_id, enrolled_id = rows[0].id, rows[1].id
    drifted = devices.get_device(db.uow(), drifted_id)
    assert drifted.profile is not None
    with db.uow() as uow:
        collected = CollectedData(
            serial_number=drifted.asset_tag,
            os_type=OSType.MACOS,
            model_identifier=drifted.profile.model_identifier,
            os_version="1.0",  # older than the profile's: "fix the profile"
            os_build=drifted.profile.os_build,
            os_login_user="nobody-here",
        )
        devices.record_collected_data_within(uow, drifted_id, collected, keep=5)
        row = uow.session.get(DeviceRow, enrolled_id)
        assert row is not None
        row.enroll_status, row.owner = "enrolled", "root"
        row.credential_id, row.credential_attestation_type = "cred-console-1", "tpm_ekpub"
        uow.commit()
    erins = devices.register_device(
        db.uow(), os_type="linux", asset_tag="ERIN-LAPTOP-1", actor="setup", assigned_user="erin"
    )
    return drifted, devices.get_device(db.uow(), enrolled_id), erins


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    with simulator(FLEET) as jamf:
        env = _env(tmp, jamf)
        db = Database.connect(env["DEVTRUST_DATABASE_URL"])
        credentials = {
            name: users.add_user(db.uow(), name, roles, actor="setup")[1]
            for name, roles in {
                "root": (Role.DEVICE_ADMIN,),
                "erin": (Role.EDITOR,),
                "dora": (Role.DEVICE_ADMIN,),
            }.items()
        }
        port = free_port()
        serve_argv = [DEVTRUST, "serve", "--port", str(port)]
        with started(serve_argv, env, "serve") as server, worker(env, "console"):
            sync = subprocess.run(
                [DEVTRUST, "jamf", "sync", "--full", "--wait", "--timeout", "60"],
                env=env, capture_output=True, text=True, timeout=90, check=False,
            )  # fmt: skip
            assert sync.returncode == 0, sync.stderr
            drifted, enrolled, erins = _seed(db)
            server.wait_for("Uvicorn running", timeout=30)
            site = Site(f"http://127.0.0.1:{port}", env, db, credentials, drifted, enrolled, erins)
            try:
                yield site
            finally:
                # No credential (nor minted token) ever reaches the service's log.
                log = server.output()
                for credential in credentials.values():
                    assert credential not in log
                db.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser, site: Site) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    seen: list[str] = []
    context.on("request", lambda request: seen.append(request.url))
    try:
        yield context
    finally:
        context.close()
        outside = [url for url in seen if not url.startswith(f"{site.base}/")]
        assert seen and outside == [], outside
        site.requests.extend(seen)


def sign_in(context: BrowserContext, site: Site, who: str) -> Page:
    page = context.new_page()
    page.goto(f"{site.base}/ui/devices")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    page.get_by_label("User credential").fill(site.credentials[who])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{site.base}/ui/devices")
    return page


def test_sign_in_find_a_device_see_its_drift_and_take_the_screenshots(
    context: BrowserContext, site: Site
) -> None:
    page = sign_in(context, site, "root")
    # The session cookie: HttpOnly, SameSite=Strict, for /ui, no credential in it.
    [cookie] = [c for c in context.cookies() if c["name"] == "devtrust_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain HTTP on loopback; over TLS it is Secure
    assert site.credentials["root"] not in cookie["value"]
    assert site.credentials["root"] not in page.content()
    registered = devices.count_devices(site.db.uow())
    expect(page.locator('[data-count="registered"]')).to_have_text(str(registered))
    expect(page.locator('[data-count="enrolled"]')).to_have_text("1")
    expect(page.locator('[data-count="tpm_ekpub"]')).to_have_text("1")
    expect(page.locator('[data-count="drifted"]')).to_have_text("1")
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / "console-devices.png"), full_page=False)

    # Filters: by OS (a select applies at once), then a search by asset tag.
    page.get_by_label("OS", exact=True).select_option("linux")
    expect(page).to_have_url(re.compile(r"os=linux"))
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody th a")).to_have_text("ERIN-LAPTOP-1")
    page.goto(f"{site.base}/ui/devices")
    page.get_by_label("Asset tag starts with").fill(site.drifted.asset_tag[:-1])
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("link", name=site.drifted.asset_tag)).to_be_visible()
    page.get_by_role("link", name=site.drifted.asset_tag).click()

    expect(page.get_by_role("heading", level=1)).to_have_text(site.drifted.label)
    expect(page.locator('[data-drift="yes"]')).to_be_visible()
    version = page.locator("table.diff tr", has_text="os_version")
    expect(version).to_have_class(re.compile("failed"))
    expect(version).to_contain_text("FAIL: is older than the profile's")
    expect(version).to_contain_text("fix the device's profile in the MDM")
    expect(page.locator("table.diff tr", has_text="os_login_user")).to_contain_text(
        "is not among the profile's usernames"
    )
    page.screenshot(path=str(DOCS / "console-device.png"), full_page=True)
    # The raw MDM record, collapsed until asked for.
    raw = page.locator("pre.raw")
    expect(raw).to_be_hidden()
    page.get_by_text("The record the MDM sent").click()
    expect(raw).to_be_visible()
    assert (DOCS / "console-devices.png").stat().st_size > 10_000

    # The same comparison as `devtrust devices diff`, field for field.
    diff = subprocess.run(
        [DEVTRUST, "devices", "diff", site.drifted.id, "--format", "json"],
        env=site.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    fields = json.loads(diff.stdout)["fields"]
    rows = page.locator("table.diff tbody tr")
    expect(rows).to_have_count(len(fields))
    for i, f in enumerate(fields):
        expect(rows.nth(i).locator("th")).to_have_text(f["field"])
        expect(rows.nth(i).locator("td").nth(2)).to_have_text(f["check"])


def test_mint_a_token_unenroll_and_remove_with_confirmation(
    context: BrowserContext, site: Site
) -> None:
    page = sign_in(context, site, "root")
    page.goto(f"{site.base}/ui/devices/{site.drifted.id}")
    page.get_by_role("link", name="Mint an enrollment token…").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Mint an enrollment token")
    page.get_by_role("button", name="Mint an enrollment token").click()
    command = page.get_by_label("Run this on the device")
    expect(command).to_have_value(re.compile(r"^devtrust device enroll --token=\S{20,}$"))
    token = command.input_value().split("=", 1)[1]
    assert token not in page.url
    # The token is a real one, for this device, usable (the inventory stores its hash).
    from inventory.services import tokens

    with site.db.uow().read() as uow:
        row = uow.session.execute(tokens.BY_HASH, {"hash": tokens.hash_token(token)}).one()
        tokens.check_usable(row, tokens.hash_token(token), now=uow.now(), user=None)
        assert row.device_id == site.drifted.id
    page.goto(f"{site.base}/ui/devices/{site.drifted.id}")
    expect(page.locator("section", has_text="Audit trail")).to_contain_text(
        "admin enrollment token created"
    )

    page.goto(f"{site.base}/ui/devices/{site.enrolled.id}")
    expect(page.locator('[data-field="trust_level"]')).to_have_text("tpm_ekpub")
    page.get_by_role("link", name="Unenroll…").click()
    page.get_by_role("button", name="Unenroll").click()
    expect(page.get_by_role("status")).to_have_text("The device was unenrolled.")
    expect(page.locator('[data-field="enroll_status"]')).to_have_text("not enrolled")
    assert devices.get_device(site.db.uow(), site.enrolled.id).credential is None

    gone = devices.register_device(
        site.db.uow(), os_type="windows", asset_tag="TO-REMOVE-1", actor="setup"
    )
    page.goto(f"{site.base}/ui/devices/{gone.id}")
    page.get_by_role("link", name="Remove from the inventory…").click()
    page.get_by_role("link", name="Cancel").click()  # cancelling keeps it
    assert devices.get_device(site.db.uow(), gone.id).id == gone.id
    page.get_by_role("link", name="Remove from the inventory…").click()
    page.get_by_role("button", name="Remove from the inventory").click()
    expect(page.get_by_role("status")).to_contain_text("TO-REMOVE-1/Windows was removed")
    response = page.goto(f"{site.base}/ui/devices/{gone.id}")
    assert response is not None and response.status == 404


def test_resync_now_and_watch_the_run_finish(context: BrowserContext, site: Site) -> None:
    page = sign_in(context, site, "root")
    page.get_by_role("link", name="Syncs").click()
    runs_before = page.locator("[data-run]").count()
    assert runs_before >= 1  # the fixture's full sync
    expect(page.locator("[data-run]").first).to_have_attribute("data-status", "succeeded")
    page.get_by_label("Kind").select_option("full")
    page.get_by_role("button", name="Resync now").click()
    expect(page.get_by_role("status")).to_contain_text("Sync queued")
    # The runs table refreshes itself: the new run appears and finishes, with no reload.
    newest = page.locator("[data-run]").first
    expect(page.locator("[data-run]")).to_have_count(runs_before + 1, timeout=30_000)
    expect(newest).to_have_attribute("data-status", "succeeded", timeout=30_000)
    expect(newest.locator("td").first).to_have_text("full")
    fetched = int(newest.locator("td").nth(4).inner_text())
    assert fetched > 0
    assert page.url.startswith(f"{site.base}/ui/syncs?queued=")


def test_filter_the_audit_log_and_export_it(context: BrowserContext, site: Site) -> None:
    page = sign_in(context, site, "root")
    # A failed event to highlight: a refused auto-enrollment is audited as one.
    from inventory.services import audit

    with site.db.uow() as uow:
        audit.record_within(uow, audit.DEVICE_ENROLL, actor="mallory", success=False,
                            message="enrollment refused: console test")  # fmt: skip
        uow.commit()
    page.get_by_role("link", name="Audit").click()
    page.get_by_label("Result").select_option("failed")
    expect(page).to_have_url(re.compile(r"result=failed"))
    failed = page.locator("tbody tr")
    expect(failed.first).to_have_class(re.compile("failed"))
    expect(failed.first).to_contain_text("enrollment refused: console test")
    for i in range(failed.count()):
        expect(failed.nth(i)).to_contain_text("failed")
    page.get_by_label("Result").select_option("any")
    page.get_by_label("Type").select_option("device.create")
    page.get_by_label("Asset tag").fill("ERIN-LAPTOP-1")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr")).to_contain_text("assigned to erin")
    page.get_by_label("Actor").fill("nobody-did-this")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No event matches")).to_be_visible()
    page.get_by_label("Actor").fill("")
    page.get_by_label("Since (UTC)").fill("2000-01-01T00:00")
    page.get_by_label("Until (UTC)").fill("2000-01-02T00:00")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No event matches")).to_be_visible()
    # A bad time range is a 400 naming the parameter.
    response = page.goto(f"{site.base}/ui/audit?since=yesterday")
    assert response is not None and response.status == 400
    expect(page.get_by_role("alert")).to_contain_text("since: 'yesterday' is not a time")

    page.goto(f"{site.base}/ui/audit?type=device.create&asset_tag=ERIN-LAPTOP-1")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    text = Path(download.value.path()).read_text()
    [header, row] = list(csv.reader(io.StringIO(text)))
    assert header[:4] == ["id", "time", "type", "result"]
    assert row[2:6] == ["device.create", "success", "setup", "ERIN-LAPTOP-1"]


def test_change_a_setting_and_see_an_invalid_or_stale_one_refused(
    context: BrowserContext, site: Site
) -> None:
    page = sign_in(context, site, "root")
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Mode").select_option("required")
    page.get_by_label("Minimum trust level").select_option("tpm_ekpub")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved: mode, min_attestation.")
    shown = subprocess.run(
        [DEVTRUST, "config", "show", "--format", "json"],
        env=site.env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    spec = json.loads(shown.stdout)["spec"]["device_trust"]
    assert (spec["mode"], spec["min_attestation"]) == ("required", "tpm_ekpub")

    # Invalid: a CA that is no certificate, refused as `config edit` refuses it.
    page.get_by_label("Allowed EK certificate CAs (PEM, one or more)").fill("not a certificate")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "invalid device_trust.ekcert_allowed_cas[0]: not a PEM certificate"
    )
    # Stale: another admin saved meanwhile; this form's revision is refused.
    other = context.new_page()
    other.goto(f"{site.base}/ui/settings")
    page.goto(f"{site.base}/ui/settings")
    other.get_by_label("Auto-enroll devices whose collected data matches their MDM profile").check()
    other.get_by_role("button", name="Save").click()
    expect(other.get_by_role("status")).to_have_text("Saved: auto_enroll.")
    page.get_by_label("Mode").select_option("optional")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert")).to_contain_text("the preference changed while you were")
    assert json.loads(
        subprocess.run([DEVTRUST, "config", "show", "--format", "json"], env=site.env,
                       capture_output=True, text=True, timeout=30, check=False).stdout
    )["spec"]["device_trust"]["mode"] == "required"  # fmt: skip


def test_a_non_admin_sees_only_their_devices_and_no_actions(
    context: BrowserContext, site: Site
) -> None:
    page = sign_in(context, site, "erin")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your devices")
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator('[data-count="registered"]')).to_have_text("1")
    for name in ("Syncs", "Audit", "Settings"):
        expect(page.get_by_role("link", name=name)).to_have_count(0)
    page.get_by_role("link", name="ERIN-LAPTOP-1").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("ERIN-LAPTOP-1/Linux")
    expect(page.get_by_role("navigation", name="Device actions")).to_have_count(0)
    expect(page.get_by_text("Audit trail")).to_have_count(0)
    for path in (
        f"/ui/devices/{site.drifted.id}",  # another's device
        f"/ui/devices/{site.erins.id}/do/remove",
        "/ui/syncs",
        "/ui/audit",
        "/ui/settings",
    ):
        response = page.goto(f"{site.base}{path}")
        assert response is not None and response.status == 403, path
        expect(page.get_by_role("alert")).to_contain_text("this needs the device-admin role")
    # A change sent anyway (with her own session's CSRF token) is refused too.
    page.goto(f"{site.base}/ui/devices")
    csrf = page.locator('input[name="csrf"]').first.input_value()
    answer = page.request.post(
        f"{site.base}/ui/devices/{site.erins.id}/do/remove", form={"csrf": csrf}
    )
    assert answer.status == 403
    assert devices.get_device(site.db.uow(), site.erins.id).id == site.erins.id


def test_sign_out_and_a_reset_credential_end_the_session(
    context: BrowserContext, site: Site
) -> None:
    page = sign_in(context, site, "dora")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{site.base}/ui/login")
    page.goto(f"{site.base}/ui/audit")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=%2Fui%2Faudit"))
    # A wrong credential is refused on the form, in words.
    page.get_by_label("User credential").fill("not-anyones-credential")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("that is not a user's credential")

    page = sign_in(context, site, "dora")
    copied = next(c for c in context.cookies() if c["name"] == "devtrust_session")["value"]
    users.reset_token(site.db.uow(), "dora", actor="setup")  # `devtrust users reset-token`
    page.reload()
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    # The old cookie, replayed by hand, is no session any more; nor is a forged one.
    for cookie in (copied, copied[:-4] + "AAAA", "v1.e30.AAAA"):
        answer = httpx.get(f"{site.base}/ui/devices", cookies={"devtrust_session": cookie})
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_bad_input_is_a_4xx_page_never_a_5xx(site: Site) -> None:
    with httpx.Client(base_url=site.base, timeout=10) as client:
        page = client.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        login = {"csrf": csrf.group(1), "credential": site.credentials["root"]}
        signed = client.post("/ui/login", data=login)
        assert signed.status_code == 303
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/devices").text)
        assert token is not None
        for path, status, words in [
            ("/ui/devices?os=plan9", 400, "os: &#39;plan9&#39; is not one of"),
            ("/ui/devices?trust=high", 400, "trust: &#39;high&#39; is not one of"),
            ("/ui/devices?after=%%%", 400, "after: not a page cursor"),
            ("/ui/devices?after=AAAA", 400, "invalid page cursor"),
            ("/ui/devices?bogus=1", 400, "unknown parameter &#39;bogus&#39;"),
            ("/ui/devices?os=linux&os=macos", 400, "given more than once"),
            ("/ui/devices?q=" + "A" * 300, 400, "at most 128 characters"),
            ("/ui/devices/no-such-device", 404, "not found"),
            ("/ui/devices/x/do/explode", 404, "no device action"),
            ("/ui/audit?type=nope", 400, "type: &#39;nope&#39; is not one of"),
            ("/ui/audit?after=0", 400, "after: not a page cursor"),
            ("/ui/audit?since=2026-01-02T00:00&until=2026-01-01T00:00", 400, "until: must be"),
            ("/ui/syncs?queued=%3Cscript%3E", 400, "queued: not a task id"),
        ]:
            answer = client.get(path)
            assert (answer.status_code, words in answer.text) == (status, True), (path, answer.text)
        for path, form, status in [
            ("/ui/syncs", {"csrf": token.group(1), "inventory": "default", "kind": "huge"}, 400),
            ("/ui/syncs", {"csrf": token.group(1), "inventory": "elsewhere", "kind": "full"}, 404),
            ("/ui/syncs", {"inventory": "default", "kind": "full"}, 403),  # no CSRF token
            ("/ui/settings", {"csrf": token.group(1), "revision": "x"}, 400),
            ("/ui/settings", {"csrf": token.group(1), "revision": "1", "colour": "red"}, 400),
        ]:
            assert client.post(path, data=form).status_code == status, (path, form)
        not_a_form = client.post("/ui/syncs", content=b"\xff\xfe", headers={
            "content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert not_a_form.status_code == 400
        assert client.post("/ui/syncs", json={"kind": "full"}).status_code == 400
        resync = {"csrf": token.group(1), "kind": "full", "inventory": "default"}
        evil = {"origin": "http://evil.example"}
        other_origin = client.post("/ui/syncs", data=resync, headers=evil)
        assert other_origin.status_code == 403


def test_the_benchmark_smoke_run_prints_its_figures(site: Site) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.console", "--smoke"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    line = re.search(r"sqlite +devices=(\d+) +first page: median ([\d.]+) ms.* ratio ([\d.]+)",
                     result.stdout)  # fmt: skip
    assert line is not None, result.stdout
    assert int(line.group(1)) > 0 and float(line.group(2)) > 0 and float(line.group(3)) > 0
