"""Merge per-run ``results.json`` files (e.g. one per training seed) into one Markdown report.

    python scripts/results_table.py docs/results/demo_h100_s6/*.json            # headline table
    python scripts/results_table.py --full runs/eval/*/results.json > report.md  # every task
    python scripts/results_table.py --paired rcml unconditioned docs/results/demo_cpu_s15/*.json
    python scripts/results_table.py --by-folder --paired rcml@demo_cpu_s15 unconditioned@demo_cpu_s16 \
        docs/results/demo_cpu_s15/*.json docs/results/demo_cpu_s16/*.json

The headline table has a column per method with ``mean ± std (n=..., seeds)`` over the seeds in
the files; ``--full`` writes the evaluation suite's whole report (a table per task). Two files
holding the same (method, seed, number) are refused, not averaged twice. ``--paired A B`` gives,
per headline row, A minus B paired by seed (each seed's difference, mean ± std, positives).
``--by-folder`` names each method ``method@folder`` (the file's folder), to set runs of one
method from two folders (two code versions, say) side by side.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from rcml_graph.eval.results import load_results
from rcml_graph.evaluation.report import headline_table, paired_table, results_markdown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", help="results.json files (one domain)")
    parser.add_argument("--mode", default="avg", help="similarity mode of the retrieval rows (default: avg)")
    parser.add_argument("--by-folder", action="store_true",
                        help="name each file's methods method@<its folder's name>")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--full", action="store_true", help="the whole report, a table per task")
    kind.add_argument("--paired", nargs=2, metavar=("A", "B"),
                        help="per headline row, method A minus method B paired by seed")
    args = parser.parse_args()
    loaded = [load_results(path) for path in args.files]
    domains = sorted({f.domain for f in loaded})
    if len(domains) != 1:
        parser.error(f"the files hold domains {domains}; accepted: files of one domain")
    rows = [dataclasses.replace(row, method=f"{row.method}@{Path(path).parent.name}") if args.by_folder else row
            for path, f in zip(args.files, loaded) for row in f.rows]
    if args.paired:
        methods = {row.method for row in rows}
        missing = [m for m in args.paired if m not in methods]
        if missing:
            parser.error(f"--paired {' '.join(args.paired)}: no rows of {missing}; the files hold {sorted(methods)}")
        print(paired_table(rows, *args.paired, mode=args.mode), end="")
    else:
        print(results_markdown(domains[0], rows) if args.full else headline_table(rows, mode=args.mode), end="")


if __name__ == "__main__":
    main()
