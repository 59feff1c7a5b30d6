"""Progress lines of a Graph read: each tenth of a known (or estimated) total, otherwise at most
every PROGRESS_SECONDS, never a line per page."""

from entra_pipeline.sync.graph_reads import PROGRESS_SECONDS, progress


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, line: str) -> None:
        self.lines.append(line)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_known_total_is_reported_at_each_tenth_only():
    run, clock = Said(), Clock()
    report = progress(run, clock=clock)
    for done in range(100, 1_001, 100):  # ten pages of 100
        report("users", done, 1_000)
    for done in range(1_050, 1_101, 50):
        report("users", done, 1_100)
    assert run.lines == [f"users: {n:,} of 1,000 ({n // 10}%)" for n in range(100, 1_001, 100)] + [
        "users: 1,100 of 1,100 (100%)"]


def test_a_delta_round_without_total_says_the_estimate_from_the_stored_rows():
    run, clock = Said(), Clock()
    report = progress(run, expected=10_000, clock=clock)
    for done in range(200, 12_001, 200):  # 60 pages, 20% more than stored
        report("users (full round)", done, None)
    assert run.lines[0] == "users (full round): 1,000 of about 10,000 (10%)"
    assert run.lines[-1] == "users (full round): 12,000 of about 10,000 (100%)"
    assert len(run.lines) == 12


def test_without_any_total_a_line_comes_every_few_seconds_not_every_page():
    run, clock = Said(), Clock()
    report = progress(run, clock=clock)
    for page in range(1, 101):
        clock.now = page * PROGRESS_SECONDS / 4  # four pages between two lines
        report("groups (changes)", page * 200, None)
    assert run.lines == [f"groups (changes): {n * 800:,} so far" for n in range(1, 26)]
