"""The team inbox: server-rendered Dutch pages, without JavaScript, over the same team work as
the team API (login, the team's alerts, one alert with its history, its contact details, and
claim, outcome and note forms).

A login keeps only the member id and a CSRF token in the signed session cookie, never the
token. Every form post carries the CSRF token; every page is sent `no-store` with a strict
content security policy. Decrypted contact details appear on the contact page alone, never in
a URL or a log line.
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime,
# and `CurrentMember` is local to inbox_router.
import datetime as dt
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.exceptions import HTTPException

from services.notifier.directory import Member, authenticate, member_by_id
from services.notifier.outcomes import Conflict
from services.notifier.settings import NotifierSettings
from services.notifier.teamwork import (
    NOTE_MAX_CHARS,
    DetailsRemoved,
    InvalidNote,
    NotFound,
    NothingDisclosed,
    NotYours,
    Teamwork,
)
from services.shared.events import DOMAIN_NL
from services.shared.logging import get_logger
from services.shared.outcomes import OUTCOMES
from services.shared.purposes import PURPOSES, disclosed_domains
from services.shared.region import AMSTERDAM, MUNICIPALITIES

log = get_logger("hub.notifier.inbox")

HERE = Path(__file__).parent
LOGIN_PATH = "/inbox/login"
#: The session keys a login sets, and the only ones the inbox keeps.
SESSION_MEMBER = "member_id"
SESSION_CREDENTIAL = "credential"
SESSION_CSRF = "csrf"

#: Sent with every inbox response: the pages hold personal details and run no script.
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

PRIORITY_NL = {"NORMAL": "normaal", "HIGH": "hoog", "URGENT": "spoed"}
STATUS_NL = {"open": "open", "claimed": "geclaimd", "closed": "afgesloten"}
EVENT_TYPE_NL = {
    "debt-signal": "Betalingsachterstand",
    "wvggz-report": "Wvggz-melding",
    "streettriage-handover": "Overdracht Streettriage",
    "care-indication": "Zorgindicatie",
}
#: DDAS creditor types as the standard writes them (DESIGN.md §2).
CREDITOR_TYPE_NL = {
    "ENERGIE": "Energie",
    "HUUR": "Huur",
    "HYPOTHEEK": "Hypotheek",
    "CAK_ZORGVERZEKERINGEN": "CAK Zorgverzekeringen",
    "ZORG": "Zorg",
    "WATER": "Water",
    "DUO": "DUO",
    "BELASTINGDIENST": "Belastingdienst",
    "CAK_EIGEN_BIJDRAGE": "CAK Eigen bijdrage",
    "OVERIGE": "Overige",
    "DIENST_TOESLAGEN": "Dienst Toeslagen",
}
#: Partner types are the partners' own words; the creditors among them use the DDAS types.
PARTNER_TYPE_NL = {
    **CREDITOR_TYPE_NL,
    "GGD_MELDFUNCTIE": "GGD-meldfunctie",
    "STREETTRIAGE": "Streettriage",
    "WMO_LOKET": "Wmo-loket",
    "WIJKVERPLEGING": "Wijkverpleging",
}
ACTION_NL = {"claim": "Geclaimd", "outcome": "Afgesloten", "note": "Notitie"}

# Where a login may send the member on: the list or one alert, nothing else (no open redirect).
_NEXT = re.compile(r"/inbox(/alerts/[A-Za-z0-9-]{1,64})?")  # whole string: fullmatch


def _date(value: dt.date | None) -> str:
    return value.strftime("%d-%m-%Y") if value else ""


def _moment(value: dt.datetime | None) -> str:
    return value.astimezone(AMSTERDAM).strftime("%d-%m-%Y %H:%M") if value else ""


def _amount_band(band: str | None) -> str:
    if not band:
        return ""
    if band.startswith("<"):
        return f"minder dan € {band[1:]}"
    if band.startswith(">="):
        return f"€ {band[2:]} of meer"
    low, _, high = band.partition("-")
    return f"€ {low} tot € {high}"


def _label(labels: dict[str, str]) -> Callable[[str | None], str]:
    return lambda value: labels.get(value, value) if value else ""


def _partner_type(value: str | None) -> str:
    if not value:
        return ""
    return PARTNER_TYPE_NL.get(value) or value.replace("_", " ").capitalize()


templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    datum=_date,
    moment=_moment,
    bedrag=_amount_band,
    prioriteit=_label(PRIORITY_NL),
    toestand=_label(STATUS_NL),
    soort=_label(EVENT_TYPE_NL),
    schuldeiser=_label(CREDITOR_TYPE_NL),
    partner=_partner_type,
    domein=_label(DOMAIN_NL),
    gemeente=_label(MUNICIPALITIES),
    uitkomst=_label(OUTCOMES),
    handeling=_label(ACTION_NL),
)


class _LoginNeeded(Exception):
    """No session, or its member was revoked or their team disabled."""


class _Refused(Exception):
    """A request the inbox answers with an error page."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status_code, self.title, self.message = status_code, title, message


_TEAMWORK_REFUSALS: dict[type[Exception], tuple[int, str, str]] = {
    NotFound: (404, "Melding niet gevonden", "Er is geen melding met dit nummer."),
    NotYours: (
        403,
        "Geen toegang",
        "Deze melding is niet voor uw team. Meldingen gaan naar het team van de gemeente "
        "of wijk met het doel van de melding.",
    ),
    DetailsRemoved: (
        410,
        "Gegevens verwijderd",
        "De persoonsgegevens van deze melding zijn verwijderd (bewaartermijn of verzoek om "
        "verwijdering).",
    ),
}


def _error_page(request: Request, refusal: _Refused) -> Response:
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "member": getattr(request.state, "member", None),
            "csrf": request.session.get(SESSION_CSRF, ""),
            "title": refusal.title,
            "message": refusal.message,
        },
        status_code=refusal.status_code,
    )


class _InboxRoute(APIRoute):
    """Turns the inbox's refusals into pages and adds the security headers to every answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                response = await handle(request)
            except _LoginNeeded:
                # Back to the alert after the login, as from a notice's link.
                wanted = request.url.path
                on = wanted != "/inbox" and _NEXT.fullmatch(wanted)
                target = LOGIN_PATH + (f"?volgende={quote(wanted)}" if on else "")
                response = RedirectResponse(target, status.HTTP_303_SEE_OTHER)
            except _Refused as refusal:
                response = _error_page(request, refusal)
            except (NotFound, NotYours, DetailsRemoved) as exc:
                response = _error_page(request, _Refused(*_TEAMWORK_REFUSALS[type(exc)]))
            except RequestValidationError:
                response = _error_page(
                    request,
                    _Refused(422, "Ongeldige invoer", "Het formulier of de link klopt niet."),
                )
            except HTTPException as exc:
                response = _error_page(
                    request,
                    _Refused(exc.status_code, "Fout", "Dit verzoek kan niet worden verwerkt."),
                )
            response.headers.update(SECURITY_HEADERS)
            return response

        return guarded


def start_session(request: Request, member: Member) -> None:
    """Logs `member` in: a fresh session (no fixation) with their id and a new CSRF token.

    The one place a login method ends: the token form today, an OIDC callback later.
    """
    request.session.clear()
    request.session[SESSION_MEMBER] = member.member_id
    request.session[SESSION_CREDENTIAL] = member.credential
    request.session[SESSION_CSRF] = secrets.token_urlsafe(32)


def _check_csrf(request: Request, sent: str) -> None:
    expected = request.session.get(SESSION_CSRF)
    # Compared as bytes: compare_digest refuses str with non-ASCII characters.
    if not (
        isinstance(expected, str)
        and sent
        and secrets.compare_digest(sent.encode(), expected.encode())
    ):
        log.warning("inbox.csrf_refused", path=request.url.path)
        raise _Refused(
            403,
            "Formulier geweigerd",
            "Dit formulier is verlopen of komt niet van deze pagina. Open de melding opnieuw "
            "en probeer het nog eens.",
        )


def _alert_path(alert_id: str) -> str:
    return f"/inbox/alerts/{quote(alert_id, safe='')}"


def inbox_router(
    settings: NotifierSettings,
    teamwork: Teamwork,
    sessions: async_sessionmaker[AsyncSession],
) -> APIRouter:
    router = APIRouter(route_class=_InboxRoute, include_in_schema=False)
    hours = f"{settings.notifier_session_hours:g}"

    async def current_member(request: Request) -> Member:
        """Who is this member: the one whose id a login put in the session (`member_id`).

        Any login method only has to call `start_session`: the token form below does, and an
        OIDC callback would too, after verifying the ID token and finding the member by its
        subject. A member revoked, a team disabled or a new token given since the login ends
        the session here, on the next request.
        """
        member_id = request.session.get(SESSION_MEMBER)
        credential = request.session.get(SESSION_CREDENTIAL)
        if not isinstance(member_id, str) or not isinstance(credential, str):
            raise _LoginNeeded
        async with sessions() as session:
            member = await member_by_id(session, member_id, credential)
        if member is None:
            request.session.clear()
            # Revoked, team disabled, or a new token given: the session's credential is gone.
            log.info("inbox.session_ended", member_id=member_id)
            raise _LoginNeeded
        request.state.member = member
        return member

    CurrentMember = Annotated[Member, Depends(current_member)]

    def page(
        request: Request, name: str, member: Member | None, status_code: int = 200, **context: Any
    ) -> Response:
        return templates.TemplateResponse(
            request,
            name,
            {"member": member, "csrf": request.session.get(SESSION_CSRF, ""), **context},
            status_code=status_code,
        )

    async def alert_page(
        request: Request,
        member: Member,
        alert_id: str,
        status_code: int = 200,
        message: str | None = None,
        note: str = "",
        conflict: bool = False,
    ) -> Response:
        view = await teamwork.open_alert(member, alert_id)
        history = await teamwork.history(member, alert_id)
        if conflict:
            message = _conflict_message(view)
        disclosed = disclosed_domains(member.team.purposes)
        return page(
            request,
            "alert.html",
            member,
            status_code,
            alert=view,
            history=history,
            purpose=PURPOSES[view["purpose"]].title if view["purpose"] in PURPOSES else "",
            may_see_contact=any(c["domain"] in disclosed for c in view["contributions"]),
            may_act=view["status"] != "closed" and view["claimed_by"] in (None, member.member_id),
            outcomes=OUTCOMES,
            note_max=NOTE_MAX_CHARS,
            message=message,
            note=note,
        )

    async def back_to_alert(
        request: Request, member: Member, alert_id: str, work: Awaitable[object]
    ) -> Response:
        """Back to the alert once `work` (a claim, an outcome) is done; the alert page with the
        reason, and 409, when it did not fit the alert's state."""
        try:
            await work
        except Conflict:
            return await alert_page(
                request, member, alert_id, status.HTTP_409_CONFLICT, conflict=True
            )
        return RedirectResponse(_alert_path(alert_id), status.HTTP_303_SEE_OTHER)

    @router.get("/inbox/static/inbox.css")
    async def stylesheet() -> FileResponse:
        return FileResponse(HERE / "static" / "inbox.css", media_type="text/css")

    @router.get("/inbox/login")
    async def login_form(request: Request, volgende: str = "/inbox") -> Response:
        if isinstance(request.session.get(SESSION_MEMBER), str):
            return RedirectResponse(_safe_next(volgende), status.HTTP_303_SEE_OTHER)
        return page(request, "login.html", None, next=_safe_next(volgende), hours=hours)

    @router.post("/inbox/login")
    async def login(
        request: Request,
        token: Annotated[str, Form()] = "",
        volgende: Annotated[str, Form()] = "/inbox",
    ) -> Response:
        member = None
        if token:
            async with sessions() as session:
                member = await authenticate(session, token.strip())
        if member is None:
            log.info("inbox.login_refused")
            return page(
                request,
                "login.html",
                None,
                status.HTTP_401_UNAUTHORIZED,
                next=_safe_next(volgende),
                hours=hours,
                message="Deze toegangscode is onbekend of ingetrokken.",
            )
        start_session(request, member)
        log.info("inbox.login", member_id=member.member_id, team_id=member.team.team_id)
        return RedirectResponse(_safe_next(volgende), status.HTTP_303_SEE_OTHER)

    @router.post("/inbox/logout")
    async def logout(request: Request) -> Response:
        # No CSRF check: being logged out is never harmful.
        request.session.clear()
        return RedirectResponse(LOGIN_PATH, status.HTTP_303_SEE_OTHER)

    @router.get("/inbox")
    async def alert_list(
        request: Request, member: CurrentMember, gesloten: bool = False
    ) -> Response:
        if gesloten:
            total, alerts = await teamwork.list_alerts(member, status="closed", limit=200)
        else:
            total, alerts = await teamwork.list_alerts(member, open_only=True, limit=200)
        return page(request, "list.html", member, alerts=alerts, total=total, closed=gesloten)

    @router.get("/inbox/alerts/{alert_id}")
    async def alert(request: Request, alert_id: str, member: CurrentMember) -> Response:
        return await alert_page(request, member, alert_id)

    @router.get("/inbox/alerts/{alert_id}/contact")
    async def contact(request: Request, alert_id: str, member: CurrentMember) -> Response:
        try:
            view, stored = await teamwork.contacts(member, alert_id)
        except NothingDisclosed:
            raise _Refused(
                403,
                "Geen contactgegevens",
                "Het doel van uw team geeft geen inzage in de contactgegevens bij deze melding.",
            ) from None
        return page(request, "contact.html", member, alert=view, contacts=stored)

    @router.post("/inbox/alerts/{alert_id}/claim")
    async def claim(
        request: Request, alert_id: str, member: CurrentMember, csrf: Annotated[str, Form()] = ""
    ) -> Response:
        _check_csrf(request, csrf)
        return await back_to_alert(request, member, alert_id, teamwork.claim(member, alert_id))

    @router.post("/inbox/alerts/{alert_id}/outcome")
    async def outcome(
        request: Request,
        alert_id: str,
        member: CurrentMember,
        csrf: Annotated[str, Form()] = "",
        outcome: Annotated[str, Form()] = "",
    ) -> Response:
        _check_csrf(request, csrf)
        if outcome not in OUTCOMES:
            return await alert_page(
                request,
                member,
                alert_id,
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                "Kies een uitkomst uit de lijst.",
            )
        return await back_to_alert(
            request, member, alert_id, teamwork.record_outcome(member, alert_id, outcome)
        )

    @router.post("/inbox/alerts/{alert_id}/notes")
    async def add_note(
        request: Request,
        alert_id: str,
        member: CurrentMember,
        csrf: Annotated[str, Form()] = "",
        text: Annotated[str, Form()] = "",
    ) -> Response:
        _check_csrf(request, csrf)
        try:
            await teamwork.add_note(member, alert_id, text)
        except InvalidNote:
            why = (
                "Een notitie heeft tekst nodig."
                if not text.strip()
                else f"Een notitie is hoogstens {NOTE_MAX_CHARS} tekens lang."
            )
            # The text goes back into the form, so nothing typed is lost.
            return await alert_page(
                request, member, alert_id, status.HTTP_422_UNPROCESSABLE_CONTENT, why, note=text
            )
        return RedirectResponse(_alert_path(alert_id), status.HTTP_303_SEE_OTHER)

    return router


def _safe_next(wanted: str) -> str:
    return wanted if _NEXT.fullmatch(wanted) else "/inbox"


def _conflict_message(view: dict[str, Any]) -> str:
    """Why a claim or an outcome did not fit, in Dutch, from the alert as it is now (the
    Conflict's own message is English, for the API)."""
    if view["status"] == "closed":
        outcome = OUTCOMES.get(view["outcome"], view["outcome"])
        return f"Deze melding is al afgesloten, met de uitkomst “{outcome}”."
    return (
        f"Deze melding is geclaimd door {view['claimed_by']}; "
        "alleen wie haar claimde, legt de uitkomst vast."
    )
