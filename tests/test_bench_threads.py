"""benchmarks/bench_threads.py's arithmetic and parsing: Amdahl's serial share against its
closed form, and each benchmark's throughput read from the line its script prints."""

import importlib.util
import os
import re

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def bench():
    spec = importlib.util.spec_from_file_location(
        "bench_threads", os.path.join(HERE, "..", "benchmarks", "bench_threads.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("f,n", [(0.0, 2), (0.25, 2), (1.0, 2), (0.1, 4)])
def test_serial_share_inverts_amdahls_law(f, n):
    speedup = 1.0 / (f + (1.0 - f) / n)
    assert bench().serial_share(speedup, n) == pytest.approx(f, abs=1e-12)


def test_each_benchmark_pattern_matches_the_line_its_script_prints():
    b = bench()
    for name, (args, pattern, unit) in b.BENCHMARKS.items():
        src = open(os.path.join(HERE, "..", "benchmarks", args[0])).read()
        assert unit in src, name
        assert os.path.isfile(os.path.join(HERE, "..", "benchmarks", args[0])), name
    samples = {
        "settle": "batches: 20, wall 9.81 s, 1019 samples/s",
        "crossbar": "    ideal:    480.2 ms/batch,    1041 samples/s\n"
                    " crossbar:    655.0 ms/batch,     763 samples/s",
        "conv": "  ours:  1402 ms/batch, 91.3 samples/s, 40.1 GFLOP/s useful",
        "stochastic_update": "stochastic update: 56.1 updates/s (17.82 ms)",
    }
    expected = {"settle": 1019.0, "crossbar": 763.0, "conv": 91.3, "stochastic_update": 56.1}
    for name, text in samples.items():
        assert float(re.findall(b.BENCHMARKS[name][1], text)[-1]) == expected[name]
