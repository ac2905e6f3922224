"""The benchmark report's arithmetic (bench/run.py), without running any server."""

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_run", Path(__file__).resolve().parent.parent / "bench" / "run.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def runs(*rps):
    return [{"round": i + 1, "rps": v} for i, v in enumerate(rps) if v is not None]


def test_ratios_are_paired_by_round_then_the_median_taken():
    # Per round 2.5, 1.2 and 1.67: the median is 1.67, where the ratio of the medians
    # (60 / 40) would pair the first server's middle round with the second's first.
    assert abs(bench.paired_ratio(runs(100, 60, 50), runs(40, 50, 30)) - 50 / 30) < 1e-9


def test_a_round_one_server_lacks_is_left_out():
    assert bench.paired_ratio(runs(100, 60, 50), runs(50, None, 25)) == 2.0
    assert bench.paired_ratio(runs(100), runs(None, 50)) is None


def test_table_shows_the_paired_ratios():
    results = {"hello": {"ferricorn": runs(90, 60, 66), "granian": runs(60, 50, 44)}}
    summary = {sc: {n: bench.summarize([dict(r, p50_ms=1, p99_ms=2, errors=0, rss_idle_kib=1, rss_load_kib=1,
                                             start_ms=1, server_cpu_pct=90, other_on_server_cpu_pct=0,
                                             other_on_load_cpus_pct=0) for r in rs])
                    for n, rs in per.items()} for sc, per in results.items()}
    bench.add_paired_ratios(summary, results)
    row = next(line for line in bench.table(summary, ["hello"], ["ferricorn", "granian"]).splitlines() if "| ferricorn |" in line)
    # Rounds: 1.5, 1.2, 1.5 -> 1.50x (the medians, 66 / 50, would say 1.32x).
    assert "| 1.50x |" in row, row
