"""The team inbox in headless Chromium (Debian's) against the running hub: login and logout,
each team's own list, an alert's page, claim, outcome, notes, contact details and their
access log, and the forms' CSRF guard."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from services.cli.stack import TeamAccount
from services.shared.outcomes import OUTCOMES
from tests.integration.fixtures import (
    CARE_TEAM,
    DEBT_ONLY_TEAM,
    DEBT_TEAM,
    HENGELO_TEAM,
    Hub,
    base_event,
    debt_signal,
    new_address,
)
from tests.integration.test_privacy import accepted, alert_with, resident

pytestmark = [pytest.mark.integration, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
#: How long `expect` waits for a page to show something (5 s by default; actions wait 30 s).
WAIT_MS = 30_000
# The machine has no internet: without these chromium keeps trying to reach Google's services.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}

T = TypeVar("T")


def off_loop(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Runs `work` in another thread. Between its calls, Playwright's sync API leaves its event
    loop marked as running in this thread, so asyncio.run (hub.query, alert_with) refuses here."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work, *args, **kwargs).result()


@pytest.fixture(scope="module")
def browser(hub: Hub) -> Iterator[Browser]:
    # After the hub: its start runs asyncio.run, which Playwright's loop would refuse.
    # Playwright's 5 s waits are for a developer's machine; CI's two shared cores render a
    # page after a login POST more slowly. The condition stays the synchronisation.
    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Browser, hub: Hub) -> Iterator[Callable[[], Page]]:
    """Pages in browser contexts of their own: each one a member at their own computer."""
    contexts = []

    def make() -> Page:
        context = browser.new_context(base_url=hub.stack.url("notifier"), locale="nl-NL")
        contexts.append(context)
        return context.new_page()

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_page: Callable[[], Page]) -> Page:
    return new_page()


def twente_match(
    hub: Hub,
    days: tuple[str, str] = ("2025-02-03", "2025-02-10"),
    municipality: str = "GM0153",
    wijk: str = "WK015301",
    city: str = "Enschede",
    person: dict[str, Any] | None = None,
) -> str:
    """Two debt signals from different creditors for a new household: its Twente-match alert.

    By default dated in February 2025: due 10-03-2025 (4 weeks), so long overdue.
    """
    address = {**new_address(), "city": city}
    where: dict[str, Any] = {"municipality_code": municipality, "wijk_code": wijk}
    if person is not None:
        where["resident"] = person
    accepted(hub.post("debt-signal", debt_signal(address, days[0], **where), "key-huur"))
    energy = {"creditor_type": "ENERGIE", "creditor_name": "Energie 01"}
    second = accepted(
        hub.post("debt-signal", debt_signal(address, days[1], **energy, **where), "key-energie")
    )
    return off_loop(alert_with, hub, second, "twente-match", contributions=2)


def log_in(page: Page, team: TeamAccount, token: str | None = None) -> None:
    page.goto("/inbox/login")
    page.get_by_label("Toegangscode").fill(token or team.token)
    page.get_by_role("button", name="Inloggen").click()
    expect(page).to_have_url(re.compile(r"/inbox$"))
    expect(page.locator(".member")).to_have_text(team.member_id)


def alert_link(page: Page, alert_id: str) -> Locator:
    return page.locator(f'a[href="/inbox/alerts/{alert_id}"]')


def alert_row(page: Page, alert_id: str) -> Locator:
    return page.locator("tbody tr", has=alert_link(page, alert_id))


def csrf_of(page: Page) -> str:
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    assert token
    return token


def session_cookie(page: Page) -> dict[str, Any]:
    """The inbox session as the browser holds it: signed, not encrypted, so readable here."""
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "hub_inbox"]
    payload = cookie["value"].split(".")[0]
    return dict(json.loads(base64.b64decode(payload + "=" * (-len(payload) % 4))))


def test_the_inbox_needs_a_login_and_refuses_a_wrong_token(page: Page, hub: Hub) -> None:
    response = page.goto("/inbox")
    assert response is not None and response.status == 200
    expect(page).to_have_url(re.compile(r"/inbox/login$"))
    expect(page.get_by_role("heading", name="Inloggen")).to_be_visible()
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name

    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_label("Toegangscode").fill("token-that-nobody-holds")
        page.get_by_role("button", name="Inloggen").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("toegangscode is onbekend")
    expect(page.get_by_label("Toegangscode")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == "hub_inbox"]
    assert page.goto("/inbox") is not None
    expect(page).to_have_url(re.compile(r"/inbox/login$"))

    # The right token: the cookie holds the member id and a CSRF token, never the token.
    log_in(page, DEBT_TEAM)
    session = session_cookie(page)
    assert set(session) == {"member_id", "credential", "csrf"}
    assert session["member_id"] == DEBT_TEAM.member_id
    assert DEBT_TEAM.token not in json.dumps(session)
    digest = hashlib.sha256(DEBT_TEAM.token.encode()).hexdigest()
    assert session["credential"] not in digest  # a fingerprint of it, not a part
    expect(page.locator(".team")).to_have_text(DEBT_TEAM.team_id)  # the stack names teams so

    page.get_by_role("button", name="Uitloggen").click()
    expect(page).to_have_url(re.compile(r"/inbox/login$"))
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/inbox/login$"))


def test_a_link_to_an_alert_leads_there_after_the_login(page: Page, hub: Hub) -> None:
    """As from the notice e-mail or webhook, whose link points at the alert's page."""
    alert_id = twente_match(hub)
    page.goto(f"/inbox/alerts/{alert_id}")
    expect(page).to_have_url(re.compile(r"/inbox/login\?volgende="))
    page.get_by_label("Toegangscode").fill(DEBT_TEAM.token)
    page.get_by_role("button", name="Inloggen").click()
    expect(page).to_have_url(re.compile(f"/inbox/alerts/{alert_id}$"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Twente-match")
    # Elsewhere than the inbox it does not send anyone.
    page.goto("/inbox/login?volgende=https://example.org/")
    expect(page).to_have_url(re.compile(r"/inbox$"))
    css = page.request.get("/inbox/static/inbox.css")
    assert css.status == 200 and css.headers["content-type"].startswith("text/css")


def test_a_revoked_member_is_logged_out(page: Page, hub: Hub) -> None:
    stand_in = TeamAccount(DEBT_TEAM.team_id, (), (), "schuldhulp-invaller", "")
    added = hub.cli("teams", "add-member", stand_in.team_id, stand_in.member_id)
    assert added.returncode == 0
    log_in(page, stand_in, token=added.stdout.strip())
    assert hub.cli("teams", "revoke-member", stand_in.member_id).returncode == 0
    page.reload()
    expect(page).to_have_url(re.compile(r"/inbox/login$"))
    assert not [c for c in page.context.cookies() if c["name"] == "hub_inbox"]


def test_a_new_token_ends_the_sessions_of_the_old_one(page: Page, hub: Hub) -> None:
    """As when a token leaked: the member gets a new one, whoever used the old is logged out."""
    stand_in = TeamAccount(DEBT_TEAM.team_id, (), (), "schuldhulp-gelekt", "")
    first = hub.cli("teams", "add-member", stand_in.team_id, stand_in.member_id)
    log_in(page, stand_in, token=first.stdout.strip())
    page.goto("/inbox")
    expect(page).to_have_url(re.compile(r"/inbox$"))
    renewed = hub.cli("teams", "add-member", stand_in.team_id, stand_in.member_id)
    assert renewed.returncode == 0 and renewed.stdout != first.stdout
    page.reload()
    expect(page).to_have_url(re.compile(r"/inbox/login$"))
    log_in(page, stand_in, token=renewed.stdout.strip())
    expect(page).to_have_url(re.compile(r"/inbox$"))


def test_each_team_sees_only_its_own_alerts(new_page: Callable[[], Page], hub: Hub) -> None:
    enschede = twente_match(hub)
    hengelo = twente_match(hub, municipality="GM0164", wijk="WK016401", city="Hengelo")

    debt = new_page()
    log_in(debt, DEBT_TEAM)
    expect(alert_link(debt, enschede)).to_have_count(1)
    expect(alert_link(debt, hengelo)).to_have_count(0)
    row = alert_row(debt, enschede)
    expect(row).to_contain_text("Twente-match")
    expect(row).to_contain_text("normaal")
    expect(row).to_contain_text("Enschede")
    expect(row).to_contain_text("WK015301")

    there = new_page()
    log_in(there, HENGELO_TEAM)
    expect(alert_link(there, hengelo)).to_have_count(1)
    expect(alert_row(there, hengelo)).to_contain_text("Hengelo (O.)")
    expect(alert_link(there, enschede)).to_have_count(0)

    # Nor does the URL open it: not for this team, whatever the address bar says.
    response = there.goto(f"/inbox/alerts/{enschede}")
    assert response is not None and response.status == 403
    expect(there.get_by_role("alert")).to_contain_text("Deze melding is niet voor uw team")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    response = there.goto(f"/inbox/alerts/{enschede}/contact")
    assert response is not None and response.status == 403
    missing = there.goto(f"/inbox/alerts/{uuid.uuid4()}")
    assert missing is not None and missing.status == 404


def test_overdue_alerts_lead_the_list_and_are_marked_in_words(page: Page, hub: Hub) -> None:
    late = twente_match(hub)
    today = dt.date.today()
    recent = (str(today - dt.timedelta(days=3)), str(today - dt.timedelta(days=1)))
    fresh = twente_match(hub, days=recent)
    log_in(page, DEBT_TEAM)

    late_row, fresh_row = alert_row(page, late), alert_row(page, fresh)
    expect(late_row).to_have_class(re.compile(r"\boverdue\b"))
    expect(late_row).to_contain_text("Over de termijn")
    expect(late_row).to_contain_text("10-02-2025")  # raised on
    expect(late_row).to_contain_text("10-03-2025 (4 weken)")  # the deadline and its rule
    expect(fresh_row).not_to_have_class(re.compile(r"\boverdue\b"))
    expect(fresh_row).not_to_contain_text("Over de termijn")
    expect(fresh_row).to_contain_text((today - dt.timedelta(days=1)).strftime("%d-%m-%Y"))
    links = [a.get_attribute("href") for a in page.locator("tbody tr a").all()]
    assert links.index(f"/inbox/alerts/{late}") < links.index(f"/inbox/alerts/{fresh}")


def test_claim_and_outcome_close_the_alert(new_page: Callable[[], Page], hub: Hub) -> None:
    alert_id = twente_match(hub)
    page = new_page()
    log_in(page, DEBT_TEAM)
    alert_link(page, alert_id).click()
    expect(page).to_have_url(re.compile(f"/inbox/alerts/{alert_id}$"))
    status = page.locator(".status")
    expect(status).to_have_text("open")
    expect(page.locator(".deadline")).to_contain_text("Over de termijn")
    expect(page.locator(".signals tbody tr")).to_have_count(2)
    expect(page.locator(".signals")).to_contain_text("Energie")

    page.get_by_role("button", name="Melding claimen").click()
    expect(status).to_contain_text(f"geclaimd door {DEBT_TEAM.member_id}")
    expect(page.get_by_role("button", name="Melding claimen")).to_have_count(0)

    # A colleague of another team sees who has it, and cannot take it over.
    other = new_page()
    log_in(other, DEBT_ONLY_TEAM)
    other.goto(f"/inbox/alerts/{alert_id}")
    expect(other.locator(".status")).to_contain_text(f"geclaimd door {DEBT_TEAM.member_id}")
    expect(other.get_by_role("button", name="Melding claimen")).to_have_count(0)
    expect(other.get_by_label("Uitkomst")).to_have_count(0)
    taken = other.request.post(
        f"/inbox/alerts/{alert_id}/claim", form={"csrf": csrf_of(other)}, max_redirects=0
    )
    assert taken.status == 409
    assert f"geclaimd door {DEBT_TEAM.member_id}" in taken.text()

    page.get_by_label("Uitkomst").select_option(label=OUTCOMES["hulp-gestart"])
    page.get_by_role("button", name="Uitkomst vastleggen").click()
    expect(status).to_contain_text("afgesloten")
    expect(status).to_contain_text(OUTCOMES["hulp-gestart"])
    expect(page.get_by_label("Uitkomst")).to_have_count(0)
    history = page.locator(".history tbody tr")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text("Geclaimd")
    expect(history.nth(1)).to_contain_text(f"Afgesloten: {OUTCOMES['hulp-gestart']}")

    page.get_by_role("link", name="Alle meldingen").click()
    expect(page.get_by_role("heading", name="Open meldingen")).to_be_visible()
    expect(alert_link(page, alert_id)).to_have_count(0)
    page.get_by_role("link", name="Afgesloten meldingen").click()
    expect(page).to_have_url(re.compile(r"/inbox\?gesloten=1$"))
    expect(alert_row(page, alert_id)).to_contain_text(OUTCOMES["hulp-gestart"])

    actions = off_loop(
        hub.query,
        "select action, member_id, outcome from alert_actions where alert_id = :a order by id",
        a=alert_id,
    )
    assert actions == [
        ("claim", DEBT_TEAM.member_id, None),
        ("outcome", DEBT_TEAM.member_id, "hulp-gestart"),
    ]


def test_contact_details_are_shown_on_request_and_the_view_is_logged(page: Page, hub: Hub) -> None:
    name = f"Inboxcanary {uuid.uuid4().hex[:8]}"
    alert_id = twente_match(hub, person=resident(name))
    log_in(page, DEBT_TEAM)
    page.goto(f"/inbox/alerts/{alert_id}")
    assert name not in page.content()  # the alert's page holds no personal details
    assert not off_loop(
        hub.query,
        "select 1 from access_log where alert_id = :a and action = 'view-contact'",
        a=alert_id,
    )

    page.get_by_role("link", name="Toon contactgegevens").click()
    expect(page).to_have_url(re.compile(f"/inbox/alerts/{alert_id}/contact$"))
    contacts = page.locator(".contact")
    expect(contacts).to_have_count(2)  # one per debt signal
    expect(contacts.first).to_contain_text(name)
    expect(contacts.first).to_contain_text("12-04-1961")
    expect(contacts.first).to_contain_text("+31 6 1234 5678")
    expect(contacts.first).to_contain_text("Teststraat")
    assert name.split()[1] not in page.url

    views = off_loop(
        hub.query,
        "select member_id, team_id, domains from access_log "
        "where alert_id = :a and action = 'view-contact'",
        a=alert_id,
    )
    assert views == [(DEBT_TEAM.member_id, DEBT_TEAM.team_id, ["debt"])]
    assert name not in hub.stack.log_path("notifier").read_text(errors="replace")


def test_no_contact_details_when_the_teams_purposes_disclose_none_of_the_alert(
    new_page: Callable[[], Page], hub: Hub
) -> None:
    """A Wvggz report and a Wmo allocation: health data. The debt team sees the alert (its
    integrated-approach purpose) but none of its domains; the care team sees them."""
    address = new_address()
    wvggz = base_event(address, report_date="2025-03-03", reporter_category="NEIGHBOUR")
    accepted(hub.post("wvggz-report", wvggz, "key-ggd"))
    care = base_event(
        address, indication_date="2025-03-05", care_kind="WMO", message_type="WMO301_ALLOCATION"
    )
    care_id = accepted(hub.post("care-indication", care, "key-wmo"))
    alert_id = off_loop(alert_with, hub, care_id, "multi-domain", contributions=2)

    debt = new_page()
    log_in(debt, DEBT_TEAM)
    debt.goto(f"/inbox/alerts/{alert_id}")
    expect(debt.get_by_role("heading", level=1)).to_contain_text("Meervoudige problematiek")
    expect(debt.locator(".other-domains")).to_contain_text("ook een ander domein betrokken")
    expect(debt.locator(".signals")).to_have_count(0)
    expect(debt.get_by_role("link", name="Toon contactgegevens")).to_have_count(0)
    for word in ("Wvggz", "zorg en ondersteuning", "GGD"):
        assert word not in debt.content()
    response = debt.goto(f"/inbox/alerts/{alert_id}/contact")
    assert response is not None and response.status == 403
    assert not off_loop(
        hub.query,
        "select 1 from access_log where alert_id = :a and action = 'view-contact'",
        a=alert_id,
    )

    care_team = new_page()
    log_in(care_team, CARE_TEAM)
    care_team.goto(f"/inbox/alerts/{alert_id}")
    expect(care_team.locator(".signals tbody tr")).to_have_count(2)
    care_team.get_by_role("link", name="Toon contactgegevens").click()
    expect(care_team.locator(".contact")).to_have_count(2)


def test_a_note_appears_in_the_history_and_is_stored_sealed(page: Page, hub: Hub) -> None:
    alert_id = twente_match(hub)
    canary = f"Notitiecanary {uuid.uuid4().hex[:8]}: mevrouw belt vrijdag terug"
    log_in(page, DEBT_TEAM)
    page.goto(f"/inbox/alerts/{alert_id}")
    note = page.get_by_label("Notitie voor het team")
    expect(note).to_have_attribute("maxlength", "2000")

    # Only blanks: refused, and what was typed stays in the form.
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        note.fill("   ")
        page.get_by_role("button", name="Notitie toevoegen").click()
    assert answer.value.status == 422
    expect(page.get_by_role("alert")).to_contain_text("Een notitie heeft tekst nodig")
    expect(note).to_have_value("   ")

    note.fill(canary)
    page.get_by_role("button", name="Notitie toevoegen").click()
    expect(page).to_have_url(re.compile(f"/inbox/alerts/{alert_id}$"))
    entry = page.locator(".history tbody tr")
    expect(entry).to_have_count(1)
    expect(entry).to_contain_text(DEBT_TEAM.member_id)
    expect(entry).to_contain_text(canary)

    sealed = off_loop(hub.query, "select sealed from alert_notes where alert_id = :a", a=alert_id)
    assert len(sealed) == 1
    stored = bytes(sealed[0][0])
    assert b"Notitiecanary" not in stored and canary.encode() not in stored
    assert canary.encode("utf-16-le") not in stored


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(page: Page, hub: Hub) -> None:
    alert_id = twente_match(hub)
    log_in(page, DEBT_TEAM)
    page.goto(f"/inbox/alerts/{alert_id}")
    base = f"/inbox/alerts/{alert_id}"
    forms = {
        "claim": {},
        "outcome": {"outcome": "niet-opgepakt"},
        "notes": {"text": "zonder csrf"},
    }
    for action, form in forms.items():
        for csrf in ({}, {"csrf": "not-the-sessions-token"}):
            refused = page.request.post(f"{base}/{action}", form={**form, **csrf}, max_redirects=0)
            assert refused.status == 403, (action, csrf)
            assert "Formulier geweigerd" in refused.text()
    # An outcome outside the fixed list, with the right token: refused too.
    token = csrf_of(page)
    unknown = page.request.post(
        f"{base}/outcome", form={"csrf": token, "outcome": "opgelost"}, max_redirects=0
    )
    assert unknown.status == 422 and "Kies een uitkomst uit de lijst" in unknown.text()

    def untouched() -> list[Any]:
        return off_loop(
            hub.query,
            "select a.status, a.claimed_by, "
            "(select count(*) from alert_actions where alert_id = a.alert_id), "
            "(select count(*) from alert_notes where alert_id = a.alert_id) "
            "from alerts a where a.alert_id = :a",
            a=alert_id,
        )

    assert untouched() == [("open", None, 0, 0)]

    # The same form with the page's token goes through: it was the token that was missing.
    done = page.request.post(f"{base}/claim", form={"csrf": token}, max_redirects=0)
    assert done.status == 303 and done.headers["location"] == base
    assert untouched() == [("claimed", DEBT_TEAM.member_id, 1, 0)]
