"""Measurements run by hand, not by the tests: `make bench` (speed and memory against a floor) and
`make reliability` (seeded faults, killed runs, hostile answers), each writing its page in docs/."""
