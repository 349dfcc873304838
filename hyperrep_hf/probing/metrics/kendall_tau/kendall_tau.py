"""Kendall's rank correlation τ-b as an `evaluate` metric, loadable offline by path.

Usage: ``evaluate.load(str(hyperrep_hf.probing.metric_path("kendall_tau"))).compute(predictions=..., references=...)``.
Self-contained on purpose: `evaluate` copies this file into its cache and treats every import as a dependency.
"""

import math

import datasets
import evaluate
import numpy
import scipy

_DESCRIPTION = """
Kendall's τ-b between predictions and references: (concordant - discordant pairs), normalised with a correction
for ties; 1 = the same ranking, -1 = reversed. Used to compare rankings of models by predicted accuracy
(out-of-distribution transfer in the hyper-representation paper; the peers' metric on the Small CNN Zoo).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of float, the predicted values.
    references: list of float, the true values.
Returns:
    kendall_tau: float in [-1, 1], NaN when either input is constant or has fewer than two values.
Examples:
    >>> kendall_tau = evaluate.load("path/to/hyperrep_hf/probing/metrics/kendall_tau")
    >>> kendall_tau.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 3.0, 2.0])
    {'kendall_tau': 0.3333333333333333}
"""

_CITATION = """
@article{kendall1938measure,
  title={A New Measure of Rank Correlation},
  author={Kendall, Maurice G.},
  journal={Biometrika},
  volume={30},
  number={1/2},
  pages={81--93},
  year={1938}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class KendallTau(evaluate.Metric):
    """Kendall rank correlation τ-b (scipy.stats.kendalltau)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
        )

    def _compute(self, predictions: list[float], references: list[float]) -> dict[str, float]:
        predictions = numpy.asarray(predictions, dtype=numpy.float64)
        references = numpy.asarray(references, dtype=numpy.float64)
        if predictions.size < 2:
            return {"kendall_tau": math.nan}
        return {"kendall_tau": float(scipy.stats.kendalltau(references, predictions).statistic)}
