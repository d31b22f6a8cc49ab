"""Smoke test of benchmarks/bench_sampler.py on a tiny graph: the script runs and writes its report."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_sampler.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_sampler", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_sampler_any_link_scope(tmp_path):
    bench = load_bench()
    results = {scope: bench.main(["--products", "500", "--edges", "5000", "--categories", "5",
                                  "--descs-per-kind", "2", "--batch-size", "32", "--train-batch-size", "8",
                                  "--min-seconds", "0.01", "--threads", "1", "--workers", "1",
                                  "--false-negative-scope", scope, "--out", str(tmp_path / f"{scope}.json")])
               for scope in ("description", "any_link")}
    assert results["any_link"]["throughput_batch"]["false_negative_scope"] == "any_link"
    assert results["any_link"]["throughput_batch"]["relation_negative_fraction"] == 0.0
    # ~20 links per product under 8 descriptions: the whole neighbourhood is several times a group
    per_pair = {scope: r["training_batch_with_dense_mask"]["false_negative_entries_per_pair"]
                for scope, r in results.items()}
    assert per_pair["any_link"] > 3 * per_pair["description"] >= 3


def test_bench_sampler_writes_its_report(tmp_path):
    out = tmp_path / "sampler.json"
    result = load_bench().main(["--products", "3000", "--edges", "30000", "--categories", "20",
                                "--descs-per-kind", "4", "--batch-size", "64",
                                "--train-batch-size", "16", "--min-seconds", "0.05",
                                "--threads", "1", "--workers", "2", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    batch = written["throughput_batch"]
    assert batch["pairs_per_batch"] > 64 and batch["pairs_per_s"] > 0
    assert batch["positive_pairs_per_s"] < batch["pairs_per_s"]  # self pairs are counted apart
    assert 0 < batch["pairs_per_s_with_epoch_setup"] <= batch["pairs_per_s"]
    iterated = written["iterated_with_prefetch_workers"]
    assert set(iterated) == {"workers_1", "workers_2"}
    assert all(v["batches"] > 0 and v["pairs_per_s"] > 0 for v in iterated.values())
    assert written["graph"]["training_pairs"] > 0 and written["machine"]["cpu_threads"] == 1
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left over
