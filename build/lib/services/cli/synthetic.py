"""One synthetic year of Twente partner events, calibrated to the region's published figures.

Calibration (DESIGN.md §2): about 18,800 debt signals from 38 creditor partners, 52% of them
from health insurers; 74% of debt households have a single signal and roughly one in ten
gets signals from different creditors within 90 days (Twente approached about 1,200
households); 182 Wvggz reports spread as in 2020 (the 3 from outside Twente left out);
Streettriage handovers and Wmo / district-nursing indications, partly in the same households.
Everything is drawn from one seeded generator, so a seed always gives the same events.
Names, birth dates, BSNs and addresses are invented; postcode ranges are synthetic.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from services.shared.events import EventType

YEAR: Final = 2025

#: name, inhabitants (rounded), synthetic PC4 range, Wvggz reports in 2020.
_MUNICIPALITIES: Final = {
    "GM0153": ("Enschede", 160_000, (7511, 7548), 75),
    "GM0164": ("Hengelo (O.)", 82_000, (7550, 7559), 23),
    "GM0141": ("Almelo", 74_000, (7600, 7609), 29),
    "GM1742": ("Rijssen-Holten", 39_000, (7460, 7463), 7),
    "GM0163": ("Hellendoorn", 36_000, (7440, 7447), 4),
    "GM1735": ("Hof van Twente", 35_000, (7470, 7478), 0),
    "GM1700": ("Twenterand", 34_000, (7670, 7687), 7),
    "GM0173": ("Oldenzaal", 32_000, (7570, 7577), 8),
    "GM1774": ("Dinkelland", 26_000, (7590, 7597), 5),
    "GM0189": ("Wierden", 25_000, (7640, 7642), 0),
    "GM0147": ("Borne", 24_000, (7621, 7623), 10),
    "GM0158": ("Haaksbergen", 24_000, (7480, 7483), 7),
    "GM0168": ("Losser", 23_000, (7580, 7588), 2),
    "GM0183": ("Tubbergen", 22_000, (7650, 7660), 5),
}

#: (partner id prefix, creditor type, partners, share of signals, may send BSN)
_CREDITORS: Final = (
    ("zorgverzekeraar", "ZORG", 4, 0.52, True),
    ("woningcorporatie", "HUUR", 14, 0.20, False),
    ("energieleverancier", "ENERGIE", 9, 0.12, False),
    ("waterbedrijf", "WATER", 1, 0.05, False),
    ("hypotheekverstrekker", "HYPOTHEEK", 3, 0.02, False),
    ("cak-zvw", "CAK_ZORGVERZEKERINGEN", 1, 0.04, True),
    ("duo", "DUO", 1, 0.02, False),
    ("belastingdienst", "BELASTINGDIENST", 1, 0.01, False),
    ("toeslagen", "DIENST_TOESLAGEN", 1, 0.01, False),
    ("cak-eigenbijdrage", "CAK_EIGEN_BIJDRAGE", 1, 0.005, True),
    ("incasso", "OVERIGE", 2, 0.005, False),
)
_CRISIS_KIND: Final = {
    "HUUR": "EVICTION",
    "HYPOTHEEK": "EVICTION",
    "ENERGIE": "ENERGY_CUTOFF",
    "WATER": "WATER_CUTOFF",
    "ZORG": "HEALTH_INSURANCE_END",
}
_FIRST_NAMES: Final = (
    "Anna",
    "Bram",
    "Daan",
    "Emma",
    "Fleur",
    "Gerrit",
    "Hanna",
    "Jan",
    "Lotte",
    "Mohamed",
    "Noor",
    "Sem",
    "Tess",
    "Yusuf",
    "Zeynep",
    "Wim",
    "Ria",
    "Henk",
)
_LAST_NAMES: Final = (
    "Jansen",
    "de Vries",
    "Bakker",
    "Nijhuis",
    "Oude Luttikhuis",
    "Kamphuis",
    "Wolters",
    "Yilmaz",
    "Haverkate",
    "Snijders",
    "Brinkman",
    "Pool",
    "Egberink",
)
_STREETS: Final = (
    "Kerkstraat",
    "Molenstraat",
    "Hengelosestraat",
    "Oldenzaalsestraat",
    "Stationsweg",
    "Haaksbergerstraat",
    "Deurningerstraat",
    "Wierdensestraat",
    "Markt",
    "Esweg",
)

DEBT_SIGNALS: Final = 18_806
DEBT_SINGLE_SHARE: Final = 0.74
DEBT_MEAN_SIGNALS_MULTI: Final = 3.0
MULTI_CREDITOR_SHARE: Final = 0.38
CRISIS_SHARE: Final = 0.03
STREETTRIAGE_HANDOVERS: Final = 240
WMO_INDICATIONS: Final = 2_000
NURSING_INDICATIONS: Final = 400
RESEND_SHARE: Final = 0.01


@dataclass(frozen=True)
class Partner:
    partner_id: str
    partner_type: str
    event_types: tuple[EventType, ...]
    may_send_bsn: bool = False
    creditor_name: str = ""


@dataclass
class Household:
    municipality_code: str
    wijk_code: str
    postcode: str
    house_number: int
    house_letter: str | None
    street: str
    city: str
    residents: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SyntheticEvent:
    event_type: EventType
    partner: Partner
    body: dict[str, Any]
    event_date: dt.date


def _bsn(rng: random.Random) -> str:
    while True:
        digits = [rng.randint(0, 9) for _ in range(8)]
        if digits[0] == 0:
            continue
        total = sum(d * w for d, w in zip(digits, range(9, 1, -1), strict=True))
        last = total % 11
        if last < 10:
            return "".join(map(str, digits)) + str(last)


class Generator:
    def __init__(self, seed: int, scale: float = 1.0) -> None:
        self.rng = random.Random(seed)
        self.scale = scale
        self.partners = self._partners()
        self._households: list[Household] = []
        self._by_municipality: dict[str, list[Household]] = {c: [] for c in _MUNICIPALITIES}
        self._addresses: set[tuple[str, int]] = set()
        self._counter = 0

    def _partners(self) -> list[Partner]:
        partners = []
        for prefix, creditor_type, count, _, bsn in _CREDITORS:
            for i in range(1, count + 1):
                partners.append(
                    Partner(
                        f"{prefix}-{i:02d}",
                        creditor_type,
                        (EventType.DEBT_SIGNAL,),
                        bsn,
                        f"{prefix.replace('-', ' ').title()} {i:02d}",
                    )
                )
        partners.append(
            Partner("ggd-twente-meldpunt", "GGD_MELDFUNCTIE", (EventType.WVGGZ_REPORT,))
        )
        partners.append(
            Partner("streettriage-twente", "STREETTRIAGE", (EventType.STREETTRIAGE_HANDOVER,))
        )
        for code in _MUNICIPALITIES:
            partners.append(
                Partner(f"wmo-{code.lower()}", "WMO_LOKET", (EventType.CARE_INDICATION,))
            )
        for i in range(1, 4):
            partners.append(
                Partner(
                    f"wijkverpleging-{i:02d}", "WIJKVERPLEGING", (EventType.CARE_INDICATION,), True
                )
            )
        return partners

    def _municipality(self) -> str:
        codes = list(_MUNICIPALITIES)
        weights = [_MUNICIPALITIES[c][1] for c in codes]
        return self.rng.choices(codes, weights)[0]

    def _household(self, municipality: str | None = None) -> Household:
        code = municipality or self._municipality()
        name, inhabitants, (low, high), _ = _MUNICIPALITIES[code]
        wijken = max(2, inhabitants // 10_000)
        while True:
            pc4 = self.rng.randint(low, high)
            letters = self.rng.choice("ABCDEGHJKLMNPRTVWXZ") + self.rng.choice(
                "ABCDEGHJKLMNPRTVWXZ"
            )
            postcode = f"{pc4}{letters}"
            number = self.rng.randint(1, 250)
            if (postcode, number) not in self._addresses:
                break
        self._addresses.add((postcode, number))
        household = Household(
            municipality_code=code,
            wijk_code=f"WK{code[2:]}{self.rng.randint(1, wijken):02d}",
            postcode=f"{pc4} {letters.lower()}" if self.rng.random() < 0.2 else postcode,
            house_number=number,
            house_letter=self.rng.choice("ab") if self.rng.random() < 0.05 else None,
            street=self.rng.choice(_STREETS),
            city=name,
        )
        for _ in range(self.rng.choice((1, 1, 2, 2, 3))):
            household.residents.append(
                {
                    "name": f"{self.rng.choice(_FIRST_NAMES)} {self.rng.choice(_LAST_NAMES)}",
                    "birth_date": dt.date(
                        self.rng.randint(1940, 2004),
                        self.rng.randint(1, 12),
                        self.rng.randint(1, 28),
                    ).isoformat(),
                    "bsn": _bsn(self.rng),
                }
            )
        self._households.append(household)
        self._by_municipality[code].append(household)
        return household

    def _date(self, low: dt.date | None = None, high: dt.date | None = None) -> dt.date:
        low = low or dt.date(YEAR, 1, 1)
        high = high or dt.date(YEAR, 12, 31)
        return low + dt.timedelta(days=self.rng.randint(0, (high - low).days))

    def _base(self, household: Household, partner: Partner) -> dict[str, Any]:
        self._counter += 1
        resident = dict(self.rng.choice(household.residents))
        if not partner.may_send_bsn:
            resident.pop("bsn")
        return {
            "partner_event_id": f"{partner.partner_id}-{YEAR}-{self._counter:07d}",
            "resident": resident,
            "address": {
                "street": household.street,
                "house_number": household.house_number,
                "house_letter": household.house_letter,
                "postcode": household.postcode,
                "city": household.city,
            },
            "municipality_code": household.municipality_code,
            "wijk_code": household.wijk_code,
        }

    def _creditor(self, exclude: str | None = None) -> Partner:
        while True:
            prefix, _, count, _, _ = self.rng.choices(_CREDITORS, [c[3] for c in _CREDITORS])[0]
            partner_id = f"{prefix}-{self.rng.randint(1, count):02d}"
            if partner_id != exclude:
                return next(p for p in self.partners if p.partner_id == partner_id)

    def _debt(self, household: Household, partner: Partner, day: dt.date) -> SyntheticEvent:
        body = self._base(household, partner)
        crisis = self.rng.random() < CRISIS_SHARE and partner.partner_type in _CRISIS_KIND
        amount = max(25, int(self.rng.lognormvariate(6.0, 0.9)))
        body.update(
            creditor_type=partner.partner_type,
            creditor_name=partner.creditor_name,
            amount_eur=amount,
            arrear_start_date=(day - dt.timedelta(days=self.rng.randint(30, 120))).isoformat(),
            signal_date=day.isoformat(),
            crisis=crisis,
            crisis_kind=_CRISIS_KIND[partner.partner_type] if crisis else None,
            warm_handover=self.rng.random() < 0.15,
        )
        return SyntheticEvent(EventType.DEBT_SIGNAL, partner, body, day)

    def _debt_year(self) -> Iterator[SyntheticEvent]:
        target = int(DEBT_SIGNALS * self.scale)
        sent = 0
        while sent < target:
            household = self._household()
            first = self._creditor()
            day = self._date()
            yield self._debt(household, first, day)
            sent += 1
            if self.rng.random() < DEBT_SINGLE_SHARE:
                continue
            extra = 1 + min(6, int(self.rng.expovariate(1 / (DEBT_MEAN_SIGNALS_MULTI - 1.5))))
            other = self._creditor(exclude=first.partner_id)
            multi_creditor = self.rng.random() < MULTI_CREDITOR_SHARE
            for i in range(extra):
                if multi_creditor and i == 0:
                    near = self._date(
                        max(day - dt.timedelta(days=80), dt.date(YEAR, 1, 1)),
                        min(day + dt.timedelta(days=80), dt.date(YEAR, 12, 31)),
                    )
                    yield self._debt(household, other, near)
                else:
                    # A creditor that signals again month after month counts as one creditor.
                    later = day + dt.timedelta(days=30 * (i + 1))
                    if later.year > YEAR:
                        break
                    yield self._debt(household, first, later)
                sent += 1

    def _some_household(self, overlap: float, municipality: str | None = None) -> Household:
        pool = self._households if municipality is None else self._by_municipality[municipality]
        if pool and self.rng.random() < overlap:
            return self.rng.choice(pool)
        return self._household(municipality)

    def events(self) -> list[SyntheticEvent]:
        """The year's events, roughly in event-time order, with some late and some re-sent."""
        events = list(self._debt_year())
        ggd = next(p for p in self.partners if p.partner_type == "GGD_MELDFUNCTIE")
        for code, (_, _, _, reports) in _MUNICIPALITIES.items():
            for _ in range(round(reports * self.scale)):
                household = self._some_household(0.4, code)
                day = self._date()
                body = self._base(household, ggd)
                body.update(
                    report_date=day.isoformat(),
                    reporter_category=self.rng.choice(
                        [
                            "FAMILY",
                            "NEIGHBOUR",
                            "POLICE",
                            "CARE_PROVIDER",
                            "MUNICIPALITY",
                            "HOUSING_CORPORATION",
                            "OTHER",
                        ]
                    ),
                )
                events.append(SyntheticEvent(EventType.WVGGZ_REPORT, ggd, body, day))
        triage = next(p for p in self.partners if p.partner_type == "STREETTRIAGE")
        for _ in range(round(STREETTRIAGE_HANDOVERS * self.scale)):
            household = self._some_household(0.5)
            day = self._date()
            body = self._base(household, triage)
            body.update(
                handover_date=day.isoformat(),
                outcome=self.rng.choice(
                    [
                        "HANDED_TO_SOCIAL_DOMAIN",
                        "HANDED_TO_SOCIAL_DOMAIN",
                        "REFERRED_TO_GGZ",
                        "REFERRED_TO_GP",
                    ]
                ),
                problem_areas=sorted(
                    set(
                        self.rng.sample(
                            [
                                "FINANCES",
                                "HOUSING",
                                "ADDICTION",
                                "PSYCHOSOCIAL",
                                "SOCIAL_ISOLATION",
                            ],
                            self.rng.randint(1, 3),
                        )
                    )
                ),
            )
            events.append(SyntheticEvent(EventType.STREETTRIAGE_HANDOVER, triage, body, day))
        nurses = [p for p in self.partners if p.partner_type == "WIJKVERPLEGING"]
        for i in range(round((WMO_INDICATIONS + NURSING_INDICATIONS) * self.scale)):
            household = self._some_household(0.15)
            day = self._date()
            if i % 6 == 5:
                partner = self.rng.choice(nurses)
                kind, message = "WIJKVERPLEGING", "ZVW_INDICATION"
                product = None
            else:
                partner = next(
                    p
                    for p in self.partners
                    if p.partner_id == f"wmo-{household.municipality_code.lower()}"
                )
                kind = "WMO"
                message = self.rng.choice(
                    [
                        "WMO301_ALLOCATION",
                        "WMO305_START",
                        "WMO315_REQUEST",
                        "WMO317_CHANGE_REQUEST",
                        "WMO307_STOP",
                    ]
                )
                product = self.rng.choice(["02", "04", "06", "07"])
            body = self._base(household, partner)
            body.update(
                indication_date=day.isoformat(),
                care_kind=kind,
                message_type=message,
                product_category=product,
            )
            events.append(SyntheticEvent(EventType.CARE_INDICATION, partner, body, day))

        # Partners deliver in roughly time order, some late by up to two weeks.
        events.sort(key=lambda e: e.event_date + dt.timedelta(days=self.rng.randint(0, 14)))
        # Some partners re-send an event later (same partner event id): it must count once.
        resend_at: dict[int, list[SyntheticEvent]] = {}
        for index in self.rng.sample(range(len(events)), int(len(events) * RESEND_SHARE)):
            resend_at.setdefault(self.rng.randint(index, len(events) - 1), []).append(events[index])
        return [e for i, event in enumerate(events) for e in (event, *resend_at.get(i, ()))]


def municipality_name(code: str) -> str:
    return _MUNICIPALITIES[code][0]
