"""Reference data of the Twente region: its 14 municipalities with their CBS codes."""

from __future__ import annotations

import re
from typing import Final
from zoneinfo import ZoneInfo

#: The region's time zone: dates partners and teams see are dates here.
AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")

#: CBS code -> name. Hengelo (O.) is GM0164; GM0248 is Hengelo in Gelderland.
MUNICIPALITIES: Final[dict[str, str]] = {
    "GM0141": "Almelo",
    "GM0147": "Borne",
    "GM1774": "Dinkelland",
    "GM0153": "Enschede",
    "GM0158": "Haaksbergen",
    "GM0163": "Hellendoorn",
    "GM0164": "Hengelo (O.)",
    "GM1735": "Hof van Twente",
    "GM0168": "Losser",
    "GM0173": "Oldenzaal",
    "GM1742": "Rijssen-Holten",
    "GM0183": "Tubbergen",
    "GM1700": "Twenterand",
    "GM0189": "Wierden",
}

WIJK_CODE: Final = re.compile(r"^WK\d{6}$")
BUURT_CODE: Final = re.compile(r"^BU\d{8}$")


def wijk_belongs_to(wijk_code: str, municipality_code: str) -> bool:
    """A CBS wijk code starts with the four digits of its municipality's code."""
    return wijk_code[2:6] == municipality_code[2:6]
