"""Static data the simulated fleet is drawn from: Apple hardware, OS releases, people.

The builds are Apple's real ones so that drift rules and the record mapping meet the
values a production Jamf Pro returns; the weights make recent releases the common case.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    identifier: str
    apple_silicon: bool
    weight: int


@dataclass(frozen=True, slots=True)
class OSRelease:
    version: str
    build: str
    #: Rapid Security Response: the supplemental build and its letter, e.g. ("22F770820d", "(c)").
    supplemental: str | None
    rsr: str | None
    weight: int


MAC_MODELS: tuple[Model, ...] = (
    Model("MacBook Pro (14-inch, 2021)", "MacBookPro18,3", True, 14),
    Model("MacBook Pro (16-inch, 2021)", "MacBookPro18,1", True, 8),
    Model("MacBook Pro (14-inch, 2023)", "Mac14,9", True, 10),
    Model("MacBook Pro (16-inch, 2023)", "Mac14,10", True, 6),
    Model("MacBook Pro (14-inch, M3, Nov 2023)", "Mac15,3", True, 10),
    Model("MacBook Pro (14-inch, M4, 2024)", "Mac16,1", True, 6),
    Model("MacBook Air (M1, 2020)", "MacBookAir10,1", True, 12),
    Model("MacBook Air (M2, 2022)", "Mac14,2", True, 12),
    Model("MacBook Air (15-inch, M2, 2023)", "Mac14,15", True, 5),
    Model("MacBook Air (13-inch, M3, 2024)", "Mac15,12", True, 8),
    Model("Mac mini (M1, 2020)", "Macmini9,1", True, 3),
    Model("Mac mini (2023)", "Mac14,3", True, 2),
    Model("iMac (24-inch, M1, 2021)", "iMac21,1", True, 3),
    Model("Mac Studio (2022)", "Mac13,1", True, 2),
    Model("MacBook Pro (13-inch, 2020, Four Thunderbolt 3 ports)", "MacBookPro16,2", False, 4),
    Model("MacBook Pro (16-inch, 2019)", "MacBookPro16,1", False, 3),
    Model("iMac (Retina 5K, 27-inch, 2020)", "iMac20,1", False, 2),
)

#: Oldest first: a changed device moves to a later entry (an upgrade).
MACOS_RELEASES: tuple[OSRelease, ...] = (
    OSRelease("13.3.1", "22E261", "22E772610a", "(a)", 1),
    OSRelease("13.4.1", "22F82", "22F770820d", "(c)", 2),
    OSRelease("13.6.6", "22G630", None, None, 3),
    OSRelease("13.6.7", "22G720", None, None, 3),
    OSRelease("14.3.1", "23D60", None, None, 3),
    OSRelease("14.4", "23E214", None, None, 3),
    OSRelease("14.4.1", "23E224", None, None, 8),
    OSRelease("14.5", "23F79", None, None, 8),
    OSRelease("14.6.1", "23G93", None, None, 10),
    OSRelease("15.0.1", "24A348", None, None, 6),
    OSRelease("15.1", "24B83", None, None, 8),
    OSRelease("15.1.1", "24B91", None, None, 10),
    OSRelease("15.2", "24C101", None, None, 12),
    OSRelease("15.3", "24D60", None, None, 10),
    OSRelease("15.3.1", "24D70", None, None, 14),
)

IOS_MODELS: tuple[Model, ...] = (
    Model("iPhone 13", "iPhone14,5", True, 10),
    Model("iPhone 14 Pro", "iPhone15,2", True, 8),
    Model("iPhone 15", "iPhone15,4", True, 10),
    Model("iPhone 15 Pro", "iPhone16,1", True, 8),
    Model("iPhone 16", "iPhone17,3", True, 8),
    Model("iPad (10th generation)", "iPad13,18", True, 6),
    Model("iPad Pro 11-inch (4th generation)", "iPad14,3", True, 3),
    Model("iPad Air 11-inch (M2)", "iPad14,8", True, 3),
)

IOS_RELEASES: tuple[OSRelease, ...] = (
    OSRelease("16.4.1", "20E252", "20E772520a", "(a)", 1),
    OSRelease("16.5.1", "20F75", "20F770750d", "(c)", 2),
    OSRelease("17.4.1", "21E236", None, None, 4),
    OSRelease("17.5.1", "21F90", None, None, 5),
    OSRelease("17.6.1", "21G93", None, None, 8),
    OSRelease("18.0.1", "22A3370", None, None, 6),
    OSRelease("18.1", "22B83", None, None, 8),
    OSRelease("18.1.1", "22B91", None, None, 10),
    OSRelease("18.2", "22C152", None, None, 12),
    OSRelease("18.3.1", "22D72", None, None, 14),
)

#: Serial prefixes (plant and year codes). Macs and mobile devices use disjoint sets, so a
#: serial never appears in both fleets.
MAC_SERIAL_PREFIXES = ("C02", "C07", "FVF", "G8W", "H4T", "D25", "F5K", "C1M")
IOS_SERIAL_PREFIXES = ("DMP", "DNP", "F4H", "GG7", "DX3", "F17")

JAMF_BINARY_VERSIONS = (
    "10.48.0-t1691594404",
    "11.3.2-t1709566563",
    "11.4.1-t1712591696",
    "11.5.0-t1714640563",
    "11.6.1-t1718637489",
)

FIRST_NAMES = (
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
    "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Uma", "Victor",
    "Wendy", "Xavier", "Yara", "Zoe", "Amir", "Bianca", "Chen", "Dmitri", "Esther", "Farah",
    "Gustavo", "Hana", "Ines", "Jonas", "Keiko", "Lars", "Mei", "Nadia", "Omar", "Priya",
    "Quentin", "Rosa", "Sanjay", "Tomasz", "Ulla", "Vera", "Wei", "Yusuf", "Zanele",
)  # fmt: skip

LAST_NAMES = (
    "Anderson", "Brown", "Castillo", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad",
    "Ivanova", "Jensen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov",
    "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Varga", "Walsh", "Xu", "Yilmaz",
    "Zhang", "Novak", "Silva", "Khan", "Murphy", "Larsen", "Costa", "Weber", "Sato",
)  # fmt: skip

POSITIONS = (
    "Engineer", "Designer", "Product Manager", "Sales", "Support", "Finance", "Legal",
    "Recruiter", "Site Reliability Engineer", "Data Scientist", "Marketing",
)  # fmt: skip

MANAGEMENT_USERNAMES = ("jamfadmin", "casper", "jamfmanage")

#: The SECURITY section's values as Jamf Pro's computers-inventory reports them, weighted.
SIP_STATUSES_WEIGHTED = (("ENABLED", 96), ("DISABLED", 3), ("NOT_COLLECTED", 1))
GATEKEEPER_WEIGHTED = (
    ("APP_STORE_AND_IDENTIFIED_DEVELOPERS", 88),
    ("APP_STORE", 8),
    ("DISABLED", 3),
    ("NOT_COLLECTED", 1),
)
SIP_STATUSES = tuple(value for value, _ in SIP_STATUSES_WEIGHTED)
GATEKEEPER_STATUSES = tuple(value for value, _ in GATEKEEPER_WEIGHTED)
XPROTECT_VERSIONS = ("5284", "5287", "5291", "5297")


def cumulative(weights: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """Cumulative weights and their total, for drawing with one random number."""
    total = 0
    out: list[int] = []
    for weight in weights:
        total += weight
        out.append(total)
    return tuple(out), total
