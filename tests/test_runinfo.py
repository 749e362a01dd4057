"""peak_cpu_rss_bytes: the process's own peak, not the one Linux carries over from the parent at exec."""

import subprocess
import sys

import pytest

from wandapp.runinfo import peak_cpu_rss_bytes

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/status is Linux's")
CHILD = "from wandapp.runinfo import peak_cpu_rss_bytes; print(peak_cpu_rss_bytes())"


@linux_only
def test_a_child_does_not_inherit_its_parents_peak():
    big = 1_500_000_000
    parent = (f"import subprocess, sys\nx = bytearray({big})\nfor i in range(0, len(x), 4096): x[i] = 1\ndel x\n"
              f"subprocess.run([sys.executable, '-c', {CHILD!r}], check=True)")
    child_peak = int(subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                                    check=True).stdout)
    assert 0 < child_peak < big / 2  # getrusage's ru_maxrss would say > 1.5 GB here


@linux_only
def test_it_grows_with_what_the_process_touches():
    touch = ("from wandapp.runinfo import peak_cpu_rss_bytes\nbefore = peak_cpu_rss_bytes()\n"
             "x = bytearray(300_000_000)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
             "print(peak_cpu_rss_bytes() - before)")
    grown = int(subprocess.run([sys.executable, "-c", touch], capture_output=True, text=True, check=True).stdout)
    assert grown >= 290_000_000


def test_it_reads_vmhwm_in_kilobytes(tmp_path):
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmPeak:\t 999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t 1024 kB\n")
    assert peak_cpu_rss_bytes(str(status)) == 2048 * 1024
