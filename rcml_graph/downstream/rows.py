"""A link-prediction run's result rows and their identity: which settings a row names, and how.

The rows join the evaluation suite's long-form ``results.json``; their identity (method, model,
seed, relation, and the options that differ from their defaults) decides which rows a rerun
replaces, which rows compete as one configuration in the report, and which runs the resume
ledger (:mod:`rcml_graph.downstream.ledger`) counts as finished.
"""

from __future__ import annotations

from dataclasses import fields

from rcml_graph.downstream.trainer import LINKPRED_TASK, LinkPredOutcome, LinkPredSettings
from rcml_graph.eval.results import ResultRow

__all__ = ["linkpred_rows", "row_identity", "settings_label"]


#: Settings left out of :func:`settings_label`: the target kind and the two options with row keys
#: of their own, the device, and ``hits_ks`` (which metrics are written, not their values).
_UNLABELLED_SETTINGS = ("target_kind", "train_negatives", "pair_score", "device", "hits_ks")


def _label_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(_label_value(v) for v in value) + "]"
    return str(value)


def settings_label(settings: LinkPredSettings, **more: tuple[object, object]) -> str:
    """The settings that differ from their defaults, as Hydra overrides: ``"dropout=0.3,lr=0.003"``.

    Sorted by name; empty when every setting has its default. ``more`` adds options that live
    outside :class:`LinkPredSettings`, each as ``name=(value, default)`` (``random_dim``). The
    label is part of a result row's identity (:func:`linkpred_rows`), so runs at different
    hyperparameters that write to one results file keep their rows apart instead of replacing
    each other's.
    """
    changed: dict[str, object] = {}
    for spec in fields(LinkPredSettings):
        if spec.name in _UNLABELLED_SETTINGS:
            continue
        value = getattr(settings, spec.name)
        if value != spec.default:
            changed[spec.name] = value
    for name, (value, default) in more.items():
        if value != default:
            changed[name] = value
    return ",".join(f"{name}={_label_value(value)}" for name, value in sorted(changed.items()))


def row_identity(target_kind: str, train_negatives: str = "uniform", pair_score: str = "none",
                 settings: str = "") -> dict[str, str]:
    """The identity keys a run's rows carry besides task, method, seed and model: ``relation``, and
    ``train_negatives``, ``pair_score``, ``settings`` only where they differ from their defaults."""
    identity = {"relation": target_kind}
    if train_negatives != "uniform":
        identity["train_negatives"] = train_negatives
    if pair_score != "none":
        identity["pair_score"] = pair_score
    if settings:
        identity["settings"] = settings
    return identity


def linkpred_rows(outcome: LinkPredOutcome, method: str, model_name: str, seed: int,
                  target_kind: str, train_negatives: str = "uniform", pair_score: str = "none",
                  settings: str = "") -> list[ResultRow]:
    """Long-form result rows: ``mrr``/``hits@1/3/10`` (protocols ``heart``, ``uniform``), ``hits@K`` (``random``).

    Rows of models trained on non-default negatives carry ``train_negatives``, rows of models
    with a pair score ``pair_score``, rows of models trained with other non-default settings
    ``settings`` (:func:`settings_label`); rows with the defaults keep the keys they had
    before the options existed.
    """
    identity = row_identity(target_kind, train_negatives, pair_score, settings)
    rows = []
    for protocol, metrics in outcome.metrics.items():
        n = int(metrics["n"])
        for metric, value in metrics.items():
            if metric == "n":
                continue
            rows.append(ResultRow(task=LINKPRED_TASK, method=method, seed=seed, mode=None, metric=metric,
                                  value=float(value), n=n,
                                  extra={"model": model_name, "protocol": protocol, **identity}))
    return rows
