"""The generated directory at every size and seed in use stays exactly what it was, and sizes
above the old limit of 999,000 users can be generated.

The fingerprints below were computed on main before the generator learned sizes above 999,000
users (commit c604f5a): the end-to-end tests' exact expectations, the demo tenant and the
benchmark's tenants all rest on these directories, so any change to the generator must leave
every one of them byte-identical."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from entra_pipeline.emulator.people import EMPLOYEE_NUMBERS_BELOW, employee_numbers
from entra_pipeline.emulator.population import generate_directory


def fingerprint(d) -> str:
    """SHA-256 of the whole directory as sorted JSON: users, groups, members, member objects,
    special groups, managers and the extension app."""
    blob = json.dumps({"users": d.users, "groups": d.groups, "members": d.members, "other_objects": d.other_objects,
                       "special": d.special, "manager_of": d.manager_of, "extension_app_id": d.extension_app_id,
                       "extension_property": d.extension_property}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


# (users, groups, seed): every generate_directory call of the tests, the demo tenant (2000, 150, 7),
# the test tenant (2800, 60, 11), reliability (3000, 120, 1), the Workday benchmark (20, 18, 1) and
# the benchmark's 10k tenant (10000, 500, 1).
FINGERPRINTS = {
    (20, 18, 1): "15eb843a50103670f114b25c5ccce72f2fb5160bad7957d8bd01de02b7acc43e",
    (40, 18, 3): "98a9b36e10531afaec45412efefff06f5e1cc61493c1d69be67468c97f302b0e",
    (40, 18, 5): "1fb59d70482faa7129b945c701ef59ccc025a6b9648ac4fbc5b480e588f0fddc",
    (100, 20, 6): "3ed77d113090cc1972b6596b7891c189da69af3e947ec635b64ff87136b71833",
    (200, 20, 5): "f51e316ee7e2fa9bfbe64585dbccc5d5e4a52cba9a040bdc468306432dfa7e44",
    (300, 20, 3): "cc0f509f2b1976998179522cf1f48cafb24c9f5b06284ff4a5acdee4070d7e5e",
    (300, 20, 13): "772ba713644fa16d045b56446d1761c7e76a3d4c7ef14e2f16e56a30bc95a04c",
    (300, 30, 3): "452e45c9db9b4d89b708290f2c253eb0a6775ebef3283d5fbeacd5f72fc5b165",
    (300, 30, 4): "0869be873d1a1133658c8797a380c482cfa613b24cd09735d2e0ea9ca86e908d",
    (400, 20, 5): "78594136b4bd4bccd415702da2699f84955f728fa1fb837e9d60f9d5437784fe",
    (600, 30, 5): "f7b53a774f8cbe2612234da039e5a50c5af32fb543d6d4fc3fed92fd3aff2c5d",
    (2000, 60, 11): "007fddd0c433d06b53ad2bba5c009b8d8a39c29fee1c8f03a20ab17cd31efec1",
    (2000, 150, 7): "edfc7bf11e312f075a51e83c15dd9e71e811ecd89f6ca711b1867a37470d563d",
    (2500, 120, 7): "db96e4f0e1cd5739062d76b025a4dea4c75d28b8ac63e74e73ba86d84396d6c4",
    (2800, 60, 11): "6a3ac94d6378c6c1855737f6f5f79da7d26fd1a472ba83a1e0e6848ab6d9f645",
    (3000, 120, 1): "9f6a8d7b1268b3d15a20ba67a89bca1e0fc97add6f5af75fb3c6c46f14146bea",
    (10000, 500, 1): "c5296727229605029a6fefe8ec6357820e3e44ba963a6179f4528fc17c60c006",
}
# The benchmark's 100k tenant takes about ten seconds to generate and hash: its own test below.
BENCH_100K = ((100_000, 5_000, 1), "e8f10326379e3614de7bc5ffe07629162fb3e45e84c3a3d8f000c1c9920497af")


@pytest.mark.parametrize("args", sorted(FINGERPRINTS))
def test_directories_in_use_are_unchanged(args):
    users, groups, seed = args
    assert fingerprint(generate_directory(users=users, groups=groups, seed=seed)) == FINGERPRINTS[args]


def test_the_benchmark_100k_directory_is_unchanged():
    (users, groups, seed), expected = BENCH_100K
    assert fingerprint(generate_directory(users=users, groups=groups, seed=seed)) == expected


def test_employee_numbers_up_to_the_old_limit_are_drawn_as_before():
    for n in (20, 2800, EMPLOYEE_NUMBERS_BELOW - 1000):
        assert employee_numbers(random.Random(5), n) == random.Random(5).sample(range(1000, 1_000_000), n)


def test_employee_numbers_above_the_old_limit_are_unique_seven_digits_at_most():
    n = EMPLOYEE_NUMBERS_BELOW - 1000 + 1  # one more than range(1000, 1_000_000) can give
    numbers = employee_numbers(random.Random(5), n)
    assert len(numbers) == n and len(set(numbers)) == n
    assert min(numbers) >= 1000 and max(numbers) < 9_000_000
    assert numbers == employee_numbers(random.Random(5), n)
    # "E" + 6 or 7 digits: never "E9" + 6 digits, the Workday report's ids of new hires not yet in Entra.
    ids = {f"E{number:06d}" for number in numbers}
    assert all(len(i) in (7, 8) for i in ids) and not any(len(i) == 8 and i.startswith("E9") for i in ids)
