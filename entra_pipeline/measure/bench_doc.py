"""What ``make bench`` concludes: issue 15's targets, each with its measured value and floor, and
``docs/benchmarks.md`` written from the results of ``bench.py``."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from pathlib import Path

from entra_pipeline.config import PROJECT_ROOT

DOC = PROJECT_ROOT / "docs" / "benchmarks.md"
#: How much more peak RSS a million users may take than 100k for memory to count as flat.
FLAT_MARGIN = 1.5
# Earlier figures for 100k users / 5k groups on this kind of machine, for comparison.
STEP_ORDER = ["raw_graph_groups", "raw_graph_users", "mapped_contacts", "filtered_contacts", "all_contacts",
              "distribution_lists"]
HISTORY = [
    ("2026-11-26", "core sync, plain default mapping, one request per member page (issue 2)", 17.4, 1000),
    ("2026-11-26", "typed mapping in DuckDB, one request per member page (issue 3)", 16.3, 1050),
    ("2026-11-26", "list reads: /users and /groups with $count, members through $batch (issue 4)", 15.5, 1111),
    ("2026-12-07", "delta reads after the restructure, before issue 15 (no floor yet)", 21.2, 1215),
    ("2026-12-07", "read-ahead, orjson, throttled progress (issue 15, first part; 3.6x the floor)", 28.4, 1352),
    ("2026-12-07", "full rounds staged in DuckDB, lists resolved in SQL, 1GB DuckDB cap (issue 15, second part)",
     21.6, 945),
    ("2026-12-08", "pages staged on their own thread, 512MB DuckDB cap (issue 15, third part)", 21.0, 836),
    ("2026-12-08", "the merged directory, all_contacts, a sixth step (issue 16): 1.9 s of it", 24.0, 834),
]


def _step_table(results: list[dict], steps: list[str], cell) -> list[str]:
    """A row per size and sync (the last full one, the incremental one), a column per step."""
    return ["| users | sync | " + " | ".join(steps) + " |", "|---:|---|" + "---:|" * len(steps),
            *(f"| {s['users']:,} | {kind} | " + " | ".join(cell(m, k) for k in steps) + " |"
              for s in results for m, kind in ((s["syncs"][-1], "full"), (s["incremental"], "incremental")))]


def _step_rss(measured: dict, step: str) -> str:
    value = (measured.get("metadata") or {}).get(step, {}).get("process_peak_rss_mb")
    return f"{value:,.0f}" if value else "–"


def comparable_floor(size: dict) -> str:
    """The floor mode a sync's read compares with: concurrent when the emulator saw the sync's
    users and groups chains overlap, else sequential."""
    return "concurrent" if any(s["reads"]["concurrent"] for s in size["syncs"]) else "sequential"


def chain_pages(m: dict) -> int:
    """The longest sequential page chain of a read: users and groups are independent rounds, so
    the unavoidable chain is the longer of the two, each page waiting for the previous nextLink."""
    return max(m["reads"]["pages"].values())


def _target(what: str, measured: float | None, limit: float, floor: str, unit: str = "") -> dict:
    return {"what": what, "measured": measured, "limit": limit, "floor": floor, "unit": unit,
            "ok": None if measured is None else measured <= limit}


def targets(results: list[dict]) -> list[dict]:
    by_name = {size["name"]: size for size in results}
    rows = []
    k100, m1 = by_name.get("100k"), by_name.get("1m")
    if k100:
        mode = comparable_floor(k100)
        f, s = k100["floor"][mode], k100["sync"]
        rows.append(_target("100k full sync wall, times the floor's", s["wall_s"] / f["wall_s"], 1.5,
                            f"{mode} floor {f['wall_s']:.1f} s, sync {s['wall_s']:.1f} s", "x"))
        rows.append(_target("100k full sync CPU, times the floor's", s["cpu_s"] / f["cpu_s"], 3.0,
                            f"{mode} floor {f['cpu_s']:.1f} CPU-s, sync {s['cpu_s']:.1f} CPU-s", "x"))
        rows.append(_target("100k full sync peak RSS, MB", s["peak_rss_mb"], 500,
                            f"floor {f['peak_rss_mb']:,.0f} MB"))
        inc, full = k100["incremental"], s
        rows.append(_target("100k incremental after 1% churn, % of the full sync's wall",
                            100 * inc["wall_s"] / full["wall_s"], 5.0,
                            f"floor of the changes {k100['incremental_floor']['wall_s']:.2f} s, "
                            f"sync {inc['wall_s']:.1f} s of {full['wall_s']:.1f} s", "%"))
        minimum = k100["incremental_floor"]["requests"]
        rows.append(_target("100k incremental Graph requests, times the minimum",
                            inc["reads"]["requests"] / minimum, 1.0,
                            f"minimum {minimum} (the pages of the two delta rounds of changes), "
                            f"sync {inc['reads']['requests']}", "x"))
    if m1:
        f, s = m1["floor"][comparable_floor(m1)], m1["sync"]
        rows.append(_target("1M full sync wall, s", s["wall_s"], 300, f"floor {f['wall_s']:.1f} s"))
        rows.append(_target("1M full sync peak RSS, MB", s["peak_rss_mb"], 2048, f"floor {f['peak_rss_mb']:,.0f} MB"))
    if k100 and m1:
        rows.append(_target("peak RSS at 1M, times at 100k (flat)", m1["sync"]["peak_rss_mb"] / k100["sync"]["peak_rss_mb"],
                            FLAT_MARGIN, f"{rss_slope_kb(k100, m1):.1f} KB per user from 100k to 1M", "x"))
    for size in results:
        if "latency" in size:
            lat = size["latency"]
            chain = chain_pages(lat) * lat["latency_s"]
            rows.append(_target(f"{size['name']} full sync at {lat['latency_s'] * 1000:.0f} ms per request, "
                                "times the longest page chain", lat["wall_s"] / chain, 1.2,
                                f"chain {chain_pages(lat)} pages = {chain:.0f} s, sync {lat['wall_s']:.0f} s", "x"))
    return rows


def rss_slope_kb(small: dict, large: dict) -> float:
    """Peak RSS added per user between two sizes, in KB."""
    return (large["sync"]["peak_rss_mb"] - small["sync"]["peak_rss_mb"]) * 1024 / (large["users"] - small["users"])


def _value(t: dict) -> str:
    if t["measured"] is None:
        return "not run"
    return f"{t['measured']:,.2f}{t['unit']}" if t["unit"] else f"{t['measured']:,.0f}"


def target_lines(rows: list[dict]) -> list[str]:
    return [f"{'PASS' if t['ok'] else 'MISS'} {t['what']}: {_value(t)} (at most {t['limit']:g}{t['unit']}; "
            f"{t['floor']})" for t in rows]


def _size_rows(results: list[dict]) -> list[str]:
    rows = []
    for size in results:
        mode = comparable_floor(size)
        s, f = size["sync"], size["floor"]
        last = size["syncs"][-1]
        rows.append(
            f"| {size['users']:,} | {size['groups']:,} | {len(size['syncs'])} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | "
            f"{s['peak_rss_mb']:,.0f} | {f['sequential']['wall_s']:.1f} / {f['sequential']['cpu_s']:.1f} / "
            f"{f['sequential']['peak_rss_mb']:,.0f} | {f['concurrent']['wall_s']:.1f} / {f['concurrent']['cpu_s']:.1f} / "
            f"{f['concurrent']['peak_rss_mb']:,.0f} | {mode} | {s['wall_s'] / f[mode]['wall_s']:.1f}x | "
            f"{s['cpu_s'] / f[mode]['cpu_s']:.1f}x | {last['reads']['requests']:,} / "
            f"{size['floors']['sequential'][-1]['requests']:,} | {size['floors']['sequential'][-1]['bytes'] / 1e6:,.1f} |")
    return rows


def _runs_line(size: dict) -> str:
    walls = lambda runs: ", ".join(f"{r['wall_s']:.1f}" for r in runs)  # noqa: E731
    return (f"- {size['users']:,} users: sync {walls(size['syncs'])} s; sequential floor "
            f"{walls(size['floors']['sequential'])} s; concurrent floor {walls(size['floors']['concurrent'])} s "
            f"(the size took {size.get('seconds', 0):,} s in all"
            + (f"; 1-minute load average {size['load'][0]} at its start, {size['load'][-1]} at its end"
               if size.get("load") else "") + ").")


def write(results: list[dict], rows: list[dict], workday: dict | None = None) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    # In the data's order, source to lists (a step this list does not know goes last).
    steps = sorted({k for size in results for k in size["syncs"][-1]["steps_s"]},
                   key=lambda k: (STEP_ORDER.index(k) if k in STEP_ORDER else len(STEP_ORDER), k))
    latency = [size for size in results if "latency" in size]
    by_name = {size["name"]: size for size in results}
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m entra_pipeline.measure.bench`; `make bench-quick` runs 10k only). "
        "For each size the Graph emulator serves a generated tenant over HTTPS from the benchmark's own "
        "process; then **the floor** and **a full sync** alternate in fresh child processes, so the machine's "
        "load affects both alike, and the medians are compared. The first pair runs the sync first: the floor "
        "reads with the `$select` the emulator saw the sync send.",
        "",
        "- **The floor** (`measure/floor.py`): a plain loop with `requests.Session`, one app token, then "
        "`/v1.0/users/delta` and `/v1.0/groups/delta` (members selected) followed from nextLink to deltaLink, "
        "every page `json.loads`-ed and dropped. *Sequential* reads users then groups; *concurrent* reads both "
        "on two threads (the best plain loop). A sync is compared with the mode its read resembles: concurrent "
        "when the emulator saw its users and groups chains overlap.",
        "- **The sync**: the same Dagster job as `make sync` (source run, then contacts run), each full sync into "
        "an empty warehouse. Wall is the job's run; CPU is the whole child process's user + system time "
        "(`RUSAGE_SELF` + `RUSAGE_CHILDREN`: interpreter, imports and Dagster's start-up included, as a sync "
        "process really costs; the floor's is counted the same way); peak RSS is the process's VmHWM.",
        "- Graph requests and pages are counted by the emulator (its request log), the token request aside.",
        "- **Incremental**: 1% of the users changed through the emulator's change API, then the floor reads "
        "the two delta rounds of changes from its own deltaLinks (the minimum requests) and the sync runs "
        "incrementally on the last full sync's warehouse.",
        "- **Latency-bound**: one more full sync with 200 ms added to every Graph request (the emulator's fault "
        "profile `slow=1.0, slow_seconds=0.2`; the token endpoint is not slowed). The longest unavoidable "
        "chain is defined as the longer of the users and groups delta chains the sync followed (pages counted "
        "by the emulator) times 200 ms: each page needs the previous page's nextLink, while the two rounds do "
        "not depend on each other and can be read at the same time.",
        "",
        f"Last run: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {cpu}, "
        f"Python {platform.python_version()}; sizes {', '.join(s['name'] for s in results)}.",
        "",
        "## Targets (issue 15)",
        "",
        "| target | measured | at most | floor and detail | |",
        "|---|---:|---:|---|---|",
        *(f"| {t['what']} | {_value(t)} | {t['limit']:g}{t['unit']} | {t['floor']} | "
          f"{'PASS' if t['ok'] else 'MISS'} |" for t in rows),
        "",
        "## Full sync against the floor",
        "",
        "Medians of the runs; floors as wall s / CPU s / peak RSS MB. Ratios against the comparable floor.",
        "",
        "| users | groups | runs | sync wall s | sync CPU s | sync peak RSS MB | sequential floor | concurrent floor | "
        "compared with | wall ratio | CPU ratio | Graph requests sync / floor | Graph MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        *_size_rows(results),
        "",
        "Every run (wall s):",
        "",
        *(_runs_line(size) for size in results),
        "",
        "## Incremental sync after 1% churn",
        "",
        "| users | users changed | sync wall s | % of the full sync | Graph requests | minimum (floor) | floor wall s |",
        "|---:|---|---:|---:|---:|---:|---:|",
        *(f"| {size['users']:,} | {size['changes']['users_changed']:,} ("
          + ", ".join(f"{n:,} {k.replace('_', ' ')}" for k, n in size["changes"].items() if k != "users_changed")
          + f") | {size['incremental']['wall_s']:.1f} | {100 * size['incremental']['wall_s'] / size['sync']['wall_s']:.1f}% | "
          f"{size['incremental']['reads']['requests']:,} | {size['incremental_floor']['requests']:,} | "
          f"{size['incremental_floor']['wall_s']:.2f} |" for size in results),
        "",
    ]
    if latency:
        lines += [
            "## Latency-bound full sync (200 ms per Graph request)",
            "",
            "| users | users pages | groups pages | longest chain s | sync wall s | times the chain | "
            "sync's chains read concurrently |",
            "|---:|---:|---:|---:|---:|---:|---|",
            *(f"| {s['users']:,} | {s['latency']['reads']['pages']['users']:,} | "
              f"{s['latency']['reads']['pages']['groups']:,} | {chain_pages(s['latency']) * s['latency']['latency_s']:.0f} | "
              f"{s['latency']['wall_s']:.0f} | {s['latency']['wall_s'] / (chain_pages(s['latency']) * s['latency']['latency_s']):.2f}x | "
              f"{'yes' if s['latency']['reads']['concurrent'] else 'no'} |" for s in latency),
            "",
        ]
    lines += [
        "## Memory",
        "",
        "| users | sync peak RSS MB | floor peak RSS MB (sequential) | directory generation s | directory MB "
        "(emulator) | benchmark process peak RSS MB after this size |",
        "|---:|---:|---:|---:|---:|---:|",
        *(f"| {s['users']:,} | {s['sync']['peak_rss_mb']:,.0f} | {s['floor']['sequential']['peak_rss_mb']:,.0f} | "
          f"{s['generation']['seconds']:.1f} | {s['generation']['rss_mb']:,.0f} | {s['emulator_peak_rss_mb']:,.0f} |"
          for s in results),
        "",
    ]
    if "100k" in by_name and "1m" in by_name:
        small, large = by_name["100k"], by_name["1m"]
        ratio = large["sync"]["peak_rss_mb"] / small["sync"]["peak_rss_mb"]
        lines += [f"From 100k to 1M users the sync's peak RSS grew {ratio:.1f}x ({rss_slope_kb(small, large):.1f} KB per "
                  f"user): {'flat' if ratio <= FLAT_MARGIN else 'not flat'} within the {FLAT_MARGIN}x margin.", ""]
    else:
        lines += ["Memory flatness from 100k to 1M users is stated when both sizes run (`--sizes 100k,1m`).", ""]
    lines += [
        "The directory is generated in memory in the benchmark's process (its dicts, about 3 KB a user); the "
        "emulator keeps the last few delta rounds it served (`delta_rounds_kept`, set to 2 here) so that "
        "skiptokens stay valid, each a projection of the whole directory.",
        "",
        "## Seconds per step (last full and the incremental sync)",
        "",
        *_step_table(results, steps, lambda m, k: f"{m['steps_s'].get(k, 0):.2f}"),
        "",
        "## Peak RSS after each step (MB, last full and the incremental sync)",
        "",
        "The process's peak so far when each step ended (steps run one after another; the read started ahead "
        "overlaps the first Graph step): a rise shows which step needed it.",
        "",
        *_step_table(results, steps, _step_rss),
        "",
        "## History",
        "",
        "Earlier 100k-user full-sync figures (wall, peak RSS; no floor measured then): "
        + "; ".join(f"{day} {what}: {wall} s, {rss:,} MB" for day, what, wall, rss in HISTORY)
        + ". Figures before 2026-11-26 (issue 8) used ru_maxrss, which on Linux also counts the benchmark "
        "parent's memory at fork time. The benchmark maps typed custom fields (Text, Number, Date) from extension "
        "attributes with every one decided, and applies the built-in exclusions plus one rule.",
        "",
    ]
    if workday:
        from entra_pipeline.measure.bench_workday import workday_lines

        lines += workday_lines(workday)
    text = "\n".join(lines)
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(text)
    return text
