import json

from uio_robot.agent import cli


def test_bench_loop_cli_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = cli.main(["bench-loop", "--rate", "50", "--ticks", "40", "--warmup", "5", "--compute-ms", "5",
                   "--step-ms", "2", "--query-steps", "4", "--query-every", "0.1", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "tick jitter ms" in printed and "query latency ms" in printed
    s = json.loads(out.read_text())
    assert s["ticks"] == 40 and s["overruns"] >= 0 and s["rate_hz"] > 0
    assert set(s["latency_ms"]) >= {"p50", "p90", "p99"} and set(s["jitter_ms"]) >= {"p50", "p99"}
    assert set(s["query_latency_ms"]) >= {"p50", "p99"} and s["queries"] >= 3
    assert s["latency_ms"]["n"] >= 5
    assert s["queries_rejected"] >= 0 and s["machine"]["cpus"] >= 1 and len(s["machine"]["load_avg_before"]) == 3


def test_bench_loop_rejects_bad_arguments(capsys):
    assert cli.main(["bench-loop", "--ticks", "0"]) == 2
    assert cli.main(["bench-loop", "--switch-interval-ms", "-1"]) == 2
    assert cli.main(["bench-loop", "--max-pending-queries", "0"]) == 2
