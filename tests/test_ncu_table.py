"""benchmarks/kernels/ncu_table.py on the committed Nsight Compute reports of the H100 and H200 (no GPU needed)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "benchmarks" / "results" / "h100_ncu"
H200_REPORTS = ROOT / "benchmarks" / "results" / "h200_ncu"
SHAPES = {"gateup": (22016, 4096), "down": (4096, 11008)}  # (out, in) of the profiled products


@pytest.fixture(scope="module")
def ncu_table():
    from benchmarks.kernels import ncu_table

    return ncu_table


def test_both_report_kinds_are_read_and_labelled_by_product(ncu_table):
    details = REPORTS / "gateup_8192_v1.csv"
    assert not ncu_table.is_raw(details) and ncu_table.product_labels(details) == ["cublas", "cutlass", "cusparselt"]
    assert ncu_table.kernels(details)[0][1]["Compute (SM) Throughput"] > 90  # cuBLAS, tensor-bound
    raw = REPORTS / "gateup_8192_smem.csv"
    assert ncu_table.is_raw(raw)
    (name, cublas), *_, (_, cusparselt) = ncu_table.raw_kernels(raw)
    assert name.startswith("nvjet") and cublas["wgmma"] == pytest.approx(306.46272)
    assert cusparselt["kcycles"] == pytest.approx(cusparselt["ms"] * cusparselt["mhz"])


@pytest.mark.parametrize("report", sorted(REPORTS.glob("*_smem.csv")) + sorted(REPORTS.glob("*_tuned.csv")) +
                         sorted(H200_REPORTS.glob("*_smem.csv")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_wgmma_reads_are_the_fewest_the_warpgroup_tile_allows(ncu_table, report):
    """docs/speed.md's account: a 2:4 wgmma reads 1/64 byte of activations per dense-equivalent FLOP, and a
    64 x N warpgroup tile reads the compressed weight at 1/(2N); one wavefront moves 128 bytes. cuSPARSELt's
    warpgroups compute 64 x 256."""
    shape, tokens = report.name.split("_")[:2]
    flops = 2 * SHAPES[shape][0] * SHAPES[shape][1] * int(tokens)
    *_, (_, cusparselt) = ncu_table.raw_kernels(report)
    assert round(cusparselt["wgmma"] * 1e6) == flops // 64 // 128 + flops // 512 // 128


def test_the_printed_metric_list_is_what_the_h200_reports_hold(ncu_table):
    """benchmarks/kernels/ncu_smem_h200.sh asks ncu for RAW_METRICS; each committed report has a column for every
    one."""
    for report in sorted(H200_REPORTS.glob("*_smem.csv")):
        header = next(iter(ncu_table.csv.reader([ncu_table._split(report)[1][0]])))
        assert set(ncu_table.RAW_METRICS.values()) <= set(header), report.name
