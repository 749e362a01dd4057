"""Every workflow rule that runs a job writes a benchmark file, and scripts/rule_times.py tables them."""

import re
import subprocess
import sys

from conftest import REPO

LOCAL_RULES = {"all"}  # no job of its own


def test_every_rule_has_a_benchmark_under_the_results_folder():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for rule, body in re.findall(r"^rule (\w+):\n((?:[ \t].*\n|\n)*)", smk.read_text(), re.M):
            if rule in LOCAL_RULES:
                continue
            match = re.search(r"benchmark:\s*\n\s*f\"\{RESULTS\}/benchmarks/(\w+)", body)
            assert match, f"rule {rule} in {smk.name} has no benchmark: directive"
            assert match[1] == rule, f"rule {rule} writes its benchmark under {match[1]}/"


def test_rule_times_table(tmp_path):
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rule, name, secs in (("prune", "a/2:4.tsv", 10), ("prune", "b/0.5.tsv", 20), ("eval_ppl", "x.tsv", 5)):
        path = tmp_path / "benchmarks" / rule / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(head + f"{secs}\t0:00:{secs}\t500\t1\t1\t1\t0\t0\t90\tNA\n")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "rule_times.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| prune | 2 | 30.0 | 15.0 | 20.0 |" in out
    assert "| eval_ppl | 1 | 5.0 |" in out
    assert "| all | 3 | 35.0 |" in out
    empty = subprocess.run([sys.executable, str(REPO / "scripts" / "rule_times.py"), str(tmp_path / "none")],
                           capture_output=True, text=True)
    assert empty.returncode == 2


def test_a_warm_started_jobs_cpu_and_memory_come_from_its_log(tmp_path):
    head = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    bench, log = tmp_path / "benchmarks" / "eval_ppl" / "m" / "x.tsv", tmp_path / "logs" / "eval_ppl" / "m" / "x.log"
    bench.parent.mkdir(parents=True)
    log.parent.mkdir(parents=True)
    bench.write_text(head + "7\t0:00:07\t15\t1\t1\t1\t0\t0\t1\t0.02\n")  # the client's own figures
    log.write_text("wandapp ppl: start ...\nwandapp ppl: end ... ok\n"
                   "wandapp warm: job cpu 6.5 s, max rss 1100 MB (forked child; CPU counted from the fork)\n")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "rule_times.py"), str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout
    assert "| eval_ppl | 1 | 7.0 | 7.0 | 7.0 | 6.5 | 1100 |" in out
