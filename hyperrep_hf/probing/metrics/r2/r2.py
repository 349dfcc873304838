"""R² (coefficient of determination) as an `evaluate` metric, loadable offline by path.

Usage: ``evaluate.load(str(hyperrep_hf.probing.metric_path("r2"))).compute(predictions=..., references=...)``.
Self-contained on purpose: `evaluate` copies this file into its cache and treats every import as a dependency.
"""

import math

import datasets
import evaluate
import numpy

_DESCRIPTION = """
R² = 1 - sum((references - predictions)^2) / sum((references - mean(references))^2): the share of the variance
of the references explained by the predictions (1 perfect, 0 = predicting the mean, negative = worse). The
hyper-representation paper reports it (in %) for linear probes of model properties on the test split.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of float, the predicted values.
    references: list of float, the true values.
Returns:
    r2: float, NaN when the references are constant (R² is undefined there).
Examples:
    >>> r2 = evaluate.load("path/to/hyperrep_hf/probing/metrics/r2")
    >>> r2.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 4.0])
    {'r2': 0.7857142857142857}
"""

_CITATION = """
@inproceedings{schuerholt2021hyperrepresentations,
  title={Self-Supervised Representation Learning on Neural Network Weights for Model Characteristic Prediction},
  author={Sch{\\"u}rholt, Konstantin and Kostadinov, Dimche and Borth, Damian},
  booktitle={Advances in Neural Information Processing Systems},
  year={2021}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class R2(evaluate.Metric):
    """Coefficient of determination R²."""

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
        total_sum_of_squares = float(numpy.sum((references - references.mean()) ** 2)) if references.size else 0.0
        if total_sum_of_squares == 0.0:
            return {"r2": math.nan}
        return {"r2": 1.0 - float(numpy.sum((references - predictions) ** 2)) / total_sum_of_squares}
