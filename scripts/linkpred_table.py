"""Report a link-prediction grid: tables per configuration, the configuration chosen on validation
per feature source, paired per-seed differences against a reference source, and runs the epoch
budget cut short.

    python scripts/linkpred_table.py results/linkpred_s9/magazines --relation also_bought
    python scripts/linkpred_table.py results/linkpred/demo --relation also_viewed --plot chosen.png > grid.md
    python scripts/linkpred_table.py results/linkpred_s13_fresh/magazines --relation also_bought --plot-paired paired.png
    python scripts/linkpred_table.py results/linkpred_s11_tune/*/magazines --relation also_bought   # one folder per cell

The folder is ``<linkpred.results_dir>/<domain>`` (``results.json`` and ``validation.json``).
"""

from __future__ import annotations

import argparse

from rcml_graph.downstream.report import linkpred_report, plot_chosen, plot_paired


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", nargs="+",
                        help="<linkpred.results_dir>/<domain>; several: one per hyperparameter cell "
                             "(<root>/<cell>/<domain>), the cells competing in the choice on validation")
    parser.add_argument("--reference", default="rcml", help="features compared with every other (default: rcml)")
    parser.add_argument("--relation", default=None, help="target kind of the rows (default: every row)")
    parser.add_argument("--selection", default="heart", choices=("heart", "uniform"),
                        help="validation protocol that chooses each source's configuration (default: heart)")
    parser.add_argument("--seed-groups", type=int, default=None, metavar="N",
                        help="seeds equal modulo N share a checkpoint: also test the per-group means")
    parser.add_argument("--plot", default=None, help="also write a PNG of each source's chosen configuration")
    parser.add_argument("--plot-paired", default=None,
                        help="also write a PNG of the per-seed differences, reference minus each source")
    args = parser.parse_args()
    print(linkpred_report(args.directory, args.reference, args.relation, args.selection, seed_groups=args.seed_groups),
          end="")
    if args.plot:
        plot_chosen(args.directory, args.plot, args.relation, args.selection)
    if args.plot_paired:
        plot_paired(args.directory, args.plot_paired, args.reference, args.relation, args.selection)


if __name__ == "__main__":
    main()
