"""The benchmark's verdicts: each of issue 15's targets from measured figures, against the floor
the sync's read compares with."""

from __future__ import annotations

import pytest

from entra_pipeline.measure import bench_doc


def _run(wall: float, cpu: float, rss: float, **extra) -> dict:
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": rss, **extra}


def _size(name: str, users: int, sync: dict, floors: dict, concurrent: bool = False, **extra) -> dict:
    reads = {"requests": 799, "pages": {"users": 500, "groups": 299}, "selects": {}, "concurrent": concurrent}
    return {"name": name, "users": users, "groups": users // 20, "sync": sync, "floor": floors,
            "syncs": [{**sync, "reads": reads}], **extra}


FLOORS = {"sequential": _run(8.0, 4.0, 33), "concurrent": _run(5.0, 4.5, 34)}


def test_targets_of_a_sequential_read():
    k100 = _size("100k", 100_000, _run(12.0, 12.0, 450), FLOORS,
                 incremental=_run(0.5, 2.0, 300, reads={"requests": 8}),
                 incremental_floor=_run(0.2, 0.2, 30, requests=8),
                 latency={"wall_s": 110.0, "latency_s": 0.2, "reads": {"pages": {"users": 500, "groups": 299}}})
    m1 = _size("1m", 1_000_000, _run(320.0, 300.0, 900), FLOORS)
    rows = {row["what"]: (round(row["measured"], 3), row["ok"]) for row in bench_doc.targets([k100, m1])}
    assert rows == {
        "100k full sync wall, times the floor's": (1.5, True),  # the sequential floor: 12 / 8
        "100k full sync CPU, times the floor's": (3.0, True),
        "100k full sync peak RSS, MB": (450, True),
        "100k incremental after 1% churn, % of the full sync's wall": (4.167, True),
        "100k incremental Graph requests, times the minimum": (1.0, True),
        "1M full sync wall, s": (320.0, False),
        "1M full sync peak RSS, MB": (900, True),
        "peak RSS at 1M, times at 100k (flat)": (2.0, False),
        "100k full sync at 200 ms per request, times the longest page chain": (1.1, True),  # 110 / (500 x 0.2)
    }
    assert bench_doc.rss_slope_kb(k100, m1) == pytest.approx(450 * 1024 / 900_000)


def test_a_concurrent_read_is_held_to_the_concurrent_floor():
    k100 = _size("100k", 100_000, _run(12.0, 12.0, 450), FLOORS, concurrent=True,
                 incremental=_run(1.0, 2.0, 300, reads={"requests": 10}),
                 incremental_floor=_run(0.2, 0.2, 30, requests=8))
    assert bench_doc.comparable_floor(k100) == "concurrent"
    rows = {row["what"]: (round(row["measured"], 3), row["ok"]) for row in bench_doc.targets([k100])}
    assert rows["100k full sync wall, times the floor's"] == (2.4, False)  # 12 / 5
    assert rows["100k incremental Graph requests, times the minimum"] == (1.25, False)
    assert bench_doc.target_lines(bench_doc.targets([k100]))[0] == (
        "MISS 100k full sync wall, times the floor's: 2.40x (at most 1.5x; concurrent floor 5.0 s, sync 12.0 s)")
