"""Where generated people get their names, countries, departments, titles, phone numbers and
mail addresses: culture-weighted name pools, romanised for mail, unique per domain."""

from __future__ import annotations

import random
import unicodedata


# ---------------------------------------------------------------------------
# Name pools. "display:ascii" gives the romanisation for non-Latin scripts;
# Latin names are folded automatically.
_CULTURES = {
    # culture: (weight, home countries, given names, surnames, family name first)
    "en": (
        34,
        ("US", "GB"),
        "James Mary John Patricia Michael Jennifer David Linda Sarah Daniel Emily "
        "Robert Karen Thomas Nancy Matthew Lisa Andrew Laura Kevin Rachel Brian "
        "Megan Zoë Renée Seán Siobhán Chloë",
        "Smith Johnson Brown Taylor Wilson Clark O'Brien Walker Hall Young Wright "
        "Green Baker Mitchell Carter Roberts Turner Phillips Campbell Parker Evans "
        "Edwards Collins Stewart Morris Murphy Cook Rogers Reed",
        False,
    ),
    "de": (
        20,
        ("DE", "AT"),
        "Jürgen Jörg Anna Lukas Lena Felix Sophie Maximilian Hannah Björn Günther "
        "Käthe Ömer Stefan Katrin Tobias Julia Matthias Sabine Jonas Miriam Uwe",
        "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schäfer "
        "Hoffmann Gößling Köhler Öztürk Richter Klein Wolf Schröder Neumann "
        "Schwarz Zimmermann Krüger Hartmann",
        False,
    ),
    "fr": (
        8,
        ("FR",),
        "François Hélène Chloé Léa Jérôme Amélie Théo Camille Noël Margaux Lucas Inès",
        "Dubois Lefèvre Moreau Laurent Girard Bérénger Roussel Faure Mercier Lambert Bonnet",
        False,
    ),
    "es": (
        8,
        ("ES",),
        "José María Ángel Inés Lucía Álvaro Nuria Jesús Pablo Carmen Sergio Marta",
        "Ñúñez García Fernández Jiménez López Martínez Sánchez Rodríguez Peña Gómez Ruiz",
        False,
    ),
    "pl": (
        7,
        ("PL",),
        "Łukasz Małgorzata Paweł Agnieszka Wojciech Zofia Michał Katarzyna Piotr Ewa",
        "Kowalski Nowak Wiśniewski Wróbel Łukasiewicz Dąbrowska Zieliński Kamiński Lewandowski",
        False,
    ),
    "nordic": (
        6,
        ("DK",),
        "Søren Björn Åsa Mette Jens Signe Øystein Freja Rasmus Ida",
        "Jensen Nielsen Hansen Søndergaard Ærøskøbing Håkansson Ström Østergaard Madsen Larsen",
        False,
    ),
    "ja": (
        5,
        ("JP",),
        "太郎:taro 花子:hanako 健太:kenta 由美:yumi 翔:sho 愛:ai 陽翔:haruto 結衣:yui",
        "山田:yamada 佐藤:sato 鈴木:suzuki 高橋:takahashi 田中:tanaka 渡辺:watanabe 伊藤:ito",
        True,
    ),
    "ja_latin": (
        3,
        ("JP",),
        "Haruto Yui Ren Aoi Sota Hina Yuto Mei",
        "Ito Nakamura Kobayashi Kato Yoshida Yamamoto Sasaki",
        False,
    ),
    "ru": (
        4,
        ("DE", "AT", "PL"),
        "Ольга:olga Дмитрий:dmitry Наталья:natalya Сергей:sergey Анна:anna Иван:ivan Елена:elena",
        "Иванова:ivanova Петров:petrov Смирнова:smirnova Кузнецов:kuznetsov Попов:popov Волкова:volkova",
        False,
    ),
}

# code: (weight, cities, company, language, random_phone prefix)
COUNTRIES = {
    "US": (30, ("Seattle", "New York", "Chicago", "Austin"), "Contoso Inc.", "en-US", "+1"),
    "DE": (20, ("Berlin", "München", "Hamburg", "Köln"), "Contoso GmbH", "de-DE", "+49"),
    "GB": (12, ("London", "Manchester", "Edinburgh"), "Contoso Ltd.", "en-GB", "+44"),
    "FR": (8, ("Paris", "Lyon"), "Contoso SAS", "fr-FR", "+33"),
    "AT": (5, ("Wien", "Graz"), "Contoso Austria GmbH", "de-AT", "+43"),
    "JP": (8, ("Tokyo", "Osaka"), "Contoso K.K.", "ja-JP", "+81"),
    "ES": (6, ("Madrid", "Barcelona"), "Contoso S.L.", "es-ES", "+34"),
    "PL": (6, ("Kraków", "Warszawa", "Łódź"), "Contoso Sp. z o.o.", "pl-PL", "+48"),
    "DK": (5, ("København", "Ærøskøbing", "Aarhus"), "Contoso ApS", "da-DK", "+45"),
}

DEPARTMENTS = (
    "Sales", "Marketing", "Finance", "Human Resources", "Engineering", "Operations",
    "Legal", "Customer Service", "Research & Development", "IT", "Procurement", "Logistics",
)
JOB_TITLES = (
    "Account Manager", "Software Engineer", "Senior Software Engineer", "Analyst",
    "Project Manager", "Team Lead", "Director", "Consultant", "Specialist",
    "Administrator", "Coordinator", "Vice President", "Technician", "Accountant",
    "Recruiter", "Product Owner", "Designer", "Support Engineer",
)
DIVISIONS = ("Retail", "Manufacturing", "Corporate", "Logistics", "Research")
GUEST_DOMAINS = (
    ("fabrikam.com", "Fabrikam"),
    ("northwindtraders.com", "Northwind Traders"),
    ("adatum.com", "Adatum"),
    ("tailspintoys.com", "Tailspin Toys"),
    ("wingtiptoys.com", "Wingtip Toys"),
)
APPS = ("Salesforce", "SAP", "Workday", "Jira", "VPN", "ServiceNow", "Tableau", "GitHub", "Zoom", "Okta")
ROLES = ("ReadOnly", "Contributors", "Admins", "Approvers", "Users")
CODENAMES = (
    "Aurora", "Borealis", "Cobalt", "Delta", "Ember", "Falcon", "Glacier", "Helios",
    "Ivy", "Juniper", "Kestrel", "Lumen", "Meridian", "Nova", "Orion", "Polaris",
    "Quasar", "Raven", "Sierra", "Tundra", "Umbra", "Vega", "Willow", "Zephyr",
)
SERVICE_PRINCIPALS = (
    "Workday Connector", "Salesforce SSO", "Backup Service", "Print Management",
    "HR Data Sync", "Expense Bot", "Monitoring Agent", "Build Pipeline",
)

# Fold letters that NFKD does not decompose.
_FOLD_EXTRA = str.maketrans({
    "ł": "l", "Ł": "L", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "ß": "ss",
    "đ": "d", "Đ": "D", "œ": "oe", "Œ": "Oe", "þ": "th", "Þ": "Th", "ı": "i",
})


def ascii_fold(text: str) -> str:
    """Latin text without diacritics ("Ñúñez" -> "Nunez", "Łukasz" -> "Lukasz")."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_EXTRA))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _mail_part(name: str, ascii_name: str | None) -> str:
    folded = ascii_name if ascii_name is not None else ascii_fold(name)
    return "".join(ch for ch in folded.lower() if ch.isascii() and (ch.isalnum() or ch == "-"))


def _parse_names(spec: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in spec.split():
        display, _, ascii_name = item.partition(":")
        out.append((display, _mail_part(display, ascii_name or None)))
    return tuple(out)


_CULTURE_TABLE = tuple(
    (name, weight, homes, _parse_names(given), _parse_names(surnames), family_first)
    for name, (weight, homes, given, surnames, family_first) in _CULTURES.items()
)
CULTURE_PICK = tuple(entry for entry in _CULTURE_TABLE for _ in range(entry[1]))
_COUNTRY_PICK = tuple(code for code, spec in COUNTRIES.items() for _ in range(spec[0]))


def random_guid(rng: random.Random) -> str:
    """A random-looking (version 4 style) GUID string drawn from ``rng``."""
    h = "%032x" % rng.getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def random_timestamp(rng: random.Random, first_year: int, last_year: int, *, midnight: bool = False) -> str:
    year = rng.randint(first_year, last_year)
    month = rng.randint(1, 12)
    day = rng.randint(1, 28)
    if midnight:
        return f"{year:04d}-{month:02d}-{day:02d}T00:00:00Z"
    return (
        f"{year:04d}-{month:02d}-{day:02d}T{rng.randint(6, 19):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"
    )


def random_phone(rng: random.Random, prefix: str) -> str:
    return f"{prefix} {rng.randint(20, 899)} {rng.randint(100000, 9999999)}"


class MailAllocator:
    """Hands out ``local`` parts unique per domain, ignoring case."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def allocate(self, base: str, domain: str) -> str:
        key = f"{base}@{domain}".lower()
        n = self._counts.get(key, 0) + 1
        self._counts[key] = n
        # Names carry no digits, so "john.smith2" can never collide with a base name.
        return base if n == 1 else f"{base}{n}"
