"""Linear probes on fixed features: the evaluation protocol of the paper (§5).

Every representation (hyper-representation embeddings z, raw weights W, weight statistics s(W), kernel PCA,
UMAP) is judged the same way: a linear head is fitted on the train split, its one regularisation
hyper-parameter is chosen on the validation split, and its scores are reported on every split.

```
 features (rows, num_features) ─► standardise with train mean/std ─► ridge (α from ALPHA_GRID)  → R², Kendall τ
                                                                 └─► softmax (C from C_GRID)    → accuracy
```

Refit policy: as in the paper, the probe that is reported is the one fitted on the **train split only** with the
selected α (or C); it is not refitted on train + validation, so the validation score is an honest
selection score and the test score is untouched by selection.

The fitted probes are plain affine maps, ready to become a ``torch.nn.Linear``:
``predict(x) = ((x - mean) / std) @ coef + intercept`` (ridge) and
``logits(x) = ((x - mean) / std) @ weight.T + bias`` (softmax); :meth:`RidgeProbe.as_linear` and
:meth:`SoftmaxProbe.as_linear` fold the standardisation into one weight matrix and bias.

This module never imports ``evaluate`` (slow); the same metrics ship as offline ``evaluate`` modules under
``hyperrep_hf/metrics`` (see :func:`metric_path`).
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("hyperrep_hf")

ALPHA_GRID: tuple[float, ...] = (
    1e3, 3e2, 1e2, 3e1, 1e1, 3, 1, 3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5,
)  # fmt: skip
"""The paper's ridge grid, strongest regularisation first (ties in validation score keep the stronger α)."""

C_GRID: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2)
"""Inverse regularisation strengths tried by :class:`SoftmaxProbe`, strongest regularisation first."""

GROUP_SHRINKAGE: tuple[float, ...] = (1 / 3, 1 / 10, 0.0)
"""Factors by which :func:`group_weightings` shrinks one feature group at a time (0: the group is left out)."""

METRIC_NAMES: tuple[str, ...] = ("r2", "kendall_tau")
"""Metrics shipped as offline ``evaluate`` modules (see :func:`metric_path`)."""

# Rows of standardised features processed at once when accumulating the Gram matrix: bounds the float64
# copy to block_rows × num_features instead of the whole split.
_GRAM_BLOCK_ROWS = 4096


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------


def r2_score(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Coefficient of determination 1 − SS_res / SS_tot, around the mean of ``targets`` over the rows.

    The one R² of the project: probes, the reconstruction R² of training (paper §4) and :func:`reconstruction_r2`
    call it. (``hyperrep_hf/metrics/r2`` is the same formula as an ``evaluate`` module, self-contained on purpose.)

    Args:
        targets: (num_rows,) true values, or (num_rows, num_outputs): then the sums run over every output, each
            around its own mean over the rows (the pooled R² of reconstructed weight vectors).
        predictions: Predicted values, of the same shape.

    Returns:
        R² (1 is perfect, 0 is the constant mean predictor, negative is worse). NaN when the targets are
        constant or empty: R² is undefined there, and a number would be misleading in a results table.
    """
    targets = np.asarray(targets, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if targets.ndim < 2 or predictions.ndim < 2:
        targets, predictions = targets.ravel(), predictions.ravel()
    _check_same_length(targets, predictions)
    if targets.shape != predictions.shape:
        raise ValueError(f"Inputs differ in shape: {targets.shape} vs {predictions.shape}.")
    total_sum_of_squares = float(np.sum((targets - targets.mean(axis=0)) ** 2)) if targets.size else 0.0
    if total_sum_of_squares == 0.0:
        return math.nan
    residual_sum_of_squares = float(np.sum((targets - predictions) ** 2))
    return 1.0 - residual_sum_of_squares / total_sum_of_squares


def reconstruction_r2(prediction_tokens: torch.Tensor, target_tokens: torch.Tensor, value_mask: torch.Tensor) -> float:
    """:func:`r2_score` of reconstructed tokens over their real values (padding left out), paper §4.

    Each real token entry is one weight of the network, so this is the pooled R² of the flat weight vectors: every
    weight around its mean over the batch.

    Args:
        prediction_tokens: (batch, num_tokens, token_dim).
        target_tokens: (batch, num_tokens, token_dim).
        value_mask: bool (num_tokens, token_dim), the real entries (``make_value_mask``); a leading batch dimension
            is accepted when it marks the same entries in every row.
    """
    mask = value_mask.expand_as(target_tokens)
    if not bool((mask == mask[:1]).all()):
        raise ValueError("value_mask must mark the same entries in every row (one architecture per batch).")
    real = mask[0]
    return r2_score(
        target_tokens[:, real].detach().double().cpu().numpy(),
        prediction_tokens[:, real].detach().double().cpu().numpy(),
    )


def accuracy(labels: np.ndarray | Sequence, predictions: np.ndarray | Sequence) -> float:
    """Fraction of rows where ``predictions`` equals ``labels``.

    Args:
        labels: (num_rows,) true class labels (any comparable values: strings, integers).
        predictions: (num_rows,) predicted labels.

    Returns:
        Accuracy in [0, 1]; NaN for zero rows.
    """
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    _check_same_length(labels, predictions)
    if labels.size == 0:
        return math.nan
    return float(np.mean(labels == predictions))


def kendall_tau(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Kendall rank correlation τ-b (accounts for ties), O(n log n) via scipy.

    Args:
        targets: (num_rows,) true values.
        predictions: (num_rows,) predicted values.

    Returns:
        τ in [−1, 1]; NaN when either input is constant or has fewer than two rows.
    """
    from scipy.stats import kendalltau  # scipy is a dependency of scikit-learn; imported lazily (import time)

    targets = np.asarray(targets, dtype=np.float64).ravel()
    predictions = np.asarray(predictions, dtype=np.float64).ravel()
    _check_same_length(targets, predictions)
    if targets.size < 2:
        return math.nan
    return float(kendalltau(targets, predictions).statistic)


def metric_path(name: str) -> Path:
    """Folder of the ``evaluate`` module for ``name``, loadable offline with ``evaluate.load(str(path))``.

    Args:
        name: One of :data:`METRIC_NAMES` (``"r2"``, ``"kendall_tau"``).

    Returns:
        The folder ``hyperrep_hf/metrics/<name>`` (it holds ``<name>.py``).
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; shipped metrics are {list(METRIC_NAMES)}.")
    return Path(__file__).resolve().parent / "metrics" / name


def _check_same_length(first: np.ndarray, second: np.ndarray) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(f"Inputs differ in length: {first.shape[0]} vs {second.shape[0]} rows.")


# ----------------------------------------------------------------------------------------------------------------
# Standardisation
# ----------------------------------------------------------------------------------------------------------------


def standardization_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (ddof 0) of the train features, constant features given std 1.

    Args:
        features: (num_rows, num_features) train features.

    Returns:
        mean: (num_features,) float64; std: (num_features,) float64, never zero.
    """
    features = np.asarray(features, dtype=np.float64)
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    # A constant column's std is 0 up to rounding (e.g. 1e-17 for a column of 0.1s); dividing by that noise
    # would blow the column up to ±1 garbage. Treat anything at rounding level as constant: it becomes 0.
    rounding_level = 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))
    std = np.where(std <= rounding_level, 1.0, std)
    return mean, std


def _standardize(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (np.asarray(features, dtype=np.float64) - mean) / std


def _check_features(features: np.ndarray, num_features: int | None = None, name: str = "features") -> np.ndarray:
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_rows, num_features), got shape {features.shape}.")
    if num_features is not None and features.shape[1] != num_features:
        raise ValueError(f"{name} has {features.shape[1]} features, the probe was fitted on {num_features}.")
    return features


def group_weightings(feature_groups: Sequence[int] | None, num_features: int) -> list[np.ndarray]:
    """The per-feature weightings a probe tries on feature groups, equal weights first.

    A probe on z̄ ⊕ s(W) shares one α (or C) across both blocks, so a weak block's noise is regularised no harder
    than a strong block's signal. Multiplying a block of standardised features by w is ridge with α / w² on that
    block: the probe tries every group at full weight, then each group alone shrunk by 1/3, 1/10 or left out
    (:data:`GROUP_SHRINKAGE`), and keeps the weighting and α with the best validation score (ties keep the earlier,
    so equal weights win a tie). The fitted probe is still one affine map on the standardised features.

    Args:
        feature_groups: Sizes of consecutive feature groups, summing to ``num_features`` (e.g. ``(latent_dim,
            num_statistics)``); None or one group: no weighting.
        num_features: The width of the features.

    Returns:
        A list of (num_features,) float64 weight vectors; ``[ones]`` without groups.
    """
    ones = np.ones(num_features)
    if feature_groups is None:
        return [ones]
    sizes = [int(size) for size in feature_groups]
    if any(size < 1 for size in sizes) or sum(sizes) != num_features:
        raise ValueError(f"feature_groups must be positive sizes summing to the {num_features} features, got {sizes}.")
    bounds = np.cumsum([0, *sizes])
    weightings = [ones]
    for start, stop in itertools.pairwise(bounds) if len(sizes) > 1 else ():
        for factor in GROUP_SHRINKAGE:
            weights = ones.copy()
            weights[start:stop] = factor
            weightings.append(weights)
    return weightings


def _group_weights(weights: np.ndarray, feature_groups: Sequence[int] | None) -> list[float] | None:
    """The weight of each group in a per-feature weighting (None without groups)."""
    if feature_groups is None or len(feature_groups) <= 1:
        return None
    starts = np.cumsum([0, *feature_groups])[:-1]
    return [float(weights[start]) for start in starts]


# ----------------------------------------------------------------------------------------------------------------
# Ridge regression
# ----------------------------------------------------------------------------------------------------------------


class _RidgeSolver:
    """Eigendecomposition of the standardised train features, shared by every α (and every target).

    With standardised features X (n, d) and centred targets y, ridge gives
    coef(α) = (XᵀX + αI)⁻¹ Xᵀy. One eigendecomposition of the smaller Gram matrix makes the whole grid cheap:
    - primal (d ≤ n): XᵀX = V diag(λ) Vᵀ → coef(α) = V diag(1/(λ+α)) Vᵀ Xᵀy;
    - dual (d > n):   XXᵀ = U diag(λ) Uᵀ → coef(α) = Xᵀ U diag(1/(λ+α)) Uᵀ y.
    The primal Gram is accumulated in row blocks, so a large split never needs a full float64 copy.
    A feature weighting w (:func:`group_weightings`) fits on X diag(w): its Gram is diag(w) XᵀX diag(w) (primal)
    or X diag(w²) Xᵀ (dual), decomposed once per weighting and kept; the coefficients are returned on X itself.
    """

    def __init__(self, train_features: np.ndarray) -> None:
        train_features = _check_features(train_features, name="train_features")
        num_rows, num_features = train_features.shape
        if num_rows < 2:
            raise ValueError(f"Ridge needs at least 2 train rows, got {num_rows}.")
        self.train_features = train_features
        self.mean, self.std = standardization_statistics(train_features)
        self.primal = num_features <= num_rows
        if self.primal:
            self.gram = np.zeros((num_features, num_features))
            for block in self._standardized_blocks():
                self.gram += block.T @ block
            self.standardized = None
        else:
            self.standardized = _standardize(train_features, self.mean, self.std)
        self._decompositions: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def _standardized_blocks(self):
        for start in range(0, self.train_features.shape[0], _GRAM_BLOCK_ROWS):
            yield _standardize(self.train_features[start : start + _GRAM_BLOCK_ROWS], self.mean, self.std)

    def _decomposition(self, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(eigenvalues, eigenvectors) of the weighted Gram matrix, computed once per weighting."""
        key = b"" if weights is None else weights.tobytes()
        if key not in self._decompositions:
            if self.primal:
                gram = self.gram if weights is None else weights[:, None] * self.gram * weights[None, :]
            else:
                scaled = self.standardized if weights is None else self.standardized * weights
                gram = scaled @ scaled.T
            eigenvalues, eigenvectors = np.linalg.eigh(gram)
            # The Gram matrix is positive semi-definite; tiny negative eigenvalues are rounding.
            self._decompositions[key] = (np.clip(eigenvalues, 0.0, None), eigenvectors)
        return self._decompositions[key]

    def coefficients(self, centred_targets: np.ndarray, alphas: np.ndarray, weights: np.ndarray | None = None):
        """Ridge coefficients on the standardised features for every α: centred_targets (n,), alphas (A,) → (d, A).

        With ``weights`` (d,), the fit is on the features times ``weights`` and the coefficients are multiplied
        back, so they apply to the unweighted standardised features (0 where a weight is 0).
        """
        eigenvalues, eigenvectors = self._decomposition(weights)
        shrinkage = 1.0 / (eigenvalues[:, None] + alphas[None, :])  # (k, A)
        if self.primal:
            correlation = np.zeros(self.train_features.shape[1])
            for start, block in zip(
                range(0, centred_targets.shape[0], _GRAM_BLOCK_ROWS), self._standardized_blocks(), strict=True
            ):
                correlation += block.T @ centred_targets[start : start + _GRAM_BLOCK_ROWS]
            if weights is not None:
                correlation = correlation * weights
            projected = eigenvectors.T @ correlation  # (d,)
            coefficients = eigenvectors @ (projected[:, None] * shrinkage)
        else:
            projected = eigenvectors.T @ centred_targets  # (n,)
            scaled = self.standardized if weights is None else self.standardized * weights
            coefficients = scaled.T @ (eigenvectors @ (projected[:, None] * shrinkage))
        return coefficients if weights is None else coefficients * weights[:, None]


class RidgeProbe:
    """Closed-form ridge regression on standardised features, α chosen by validation R².

    After :meth:`fit`:
        coef: (num_features,) coefficients on standardised features.
        intercept: float (the train mean of the target, since standardised train features have mean 0).
        mean, std: (num_features,) train statistics; ``predict(x) = ((x - mean) / std) @ coef + intercept``.
        alpha: the selected α.
        group_weights: with ``feature_groups``, the selected weight of each group (:func:`group_weightings`);
            else None.
        validation_score: R² of the selected α (and weighting) on the validation rows.
        validation_scores: (num_alphas,) validation R² of every α in ``alphas`` order, under the selected weighting.

    Args:
        alphas: Regularisation grid, tried in order; ties keep the first (the paper's grid runs from strong
            to weak regularisation).
        feature_groups: Sizes of consecutive feature groups (e.g. ``(latent_dim, num_statistics)`` for z̄ ⊕ s(W)):
            the weighting of the groups is chosen on validation together with α (:func:`group_weightings`).
            None: one α for all features, as in the paper.
    """

    def __init__(self, alphas: Sequence[float] = ALPHA_GRID, feature_groups: Sequence[int] | None = None) -> None:
        if len(alphas) == 0 or any(alpha <= 0 for alpha in alphas):
            raise ValueError(f"alphas must be a non-empty sequence of positive numbers, got {list(alphas)}.")
        self.alphas = tuple(float(alpha) for alpha in alphas)
        self.feature_groups = None if feature_groups is None else tuple(int(size) for size in feature_groups)
        self.coef: np.ndarray | None = None
        self.intercept: float = 0.0
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.alpha: float | None = None
        self.group_weights: list[float] | None = None
        self.validation_score: float = math.nan
        self.validation_scores: np.ndarray | None = None

    def fit(
        self,
        train_features: np.ndarray,
        train_targets: np.ndarray,
        validation_features: np.ndarray,
        validation_targets: np.ndarray,
    ) -> RidgeProbe:
        """Fits on train with every α (and group weighting) and keeps the one with the best validation R².

        To select on train (no validation split), pass the train rows as validation rows.

        Args:
            train_features: (num_train, num_features), finite.
            train_targets: (num_train,), finite.
            validation_features: (num_validation, num_features), finite.
            validation_targets: (num_validation,), finite.

        Returns:
            self.
        """
        return self._fit_with_solver(
            _RidgeSolver(train_features), train_targets, validation_features, validation_targets
        )

    def _fit_with_solver(
        self,
        solver: _RidgeSolver,
        train_targets: np.ndarray,
        validation_features: np.ndarray,
        validation_targets: np.ndarray,
    ) -> RidgeProbe:
        train_targets = np.asarray(train_targets, dtype=np.float64).ravel()
        validation_targets = np.asarray(validation_targets, dtype=np.float64).ravel()
        _check_same_length(solver.train_features, train_targets)
        num_features = solver.mean.shape[0]
        validation_features = _check_features(validation_features, num_features, "validation_features")
        _check_same_length(validation_features, validation_targets)
        weightings = group_weightings(self.feature_groups, num_features)
        intercept = float(train_targets.mean())
        standardized_validation = _standardize(validation_features, solver.mean, solver.std)
        best_error, best = math.inf, None
        for weights in weightings:
            solver_weights = weights if len(weightings) > 1 else None  # None: the paper's probe, bit for bit
            coefficients = solver.coefficients(train_targets - intercept, np.asarray(self.alphas), solver_weights)
            predictions = standardized_validation @ coefficients + intercept  # (num_validation, A)
            # For a fixed validation set, R² is a decreasing function of the MSE: selecting by MSE is the same
            # choice and still works when the validation targets are constant (R² undefined).
            squared_errors = np.mean((predictions - validation_targets[:, None]) ** 2, axis=0)
            index = int(np.argmin(squared_errors))
            if best is None or squared_errors[index] < best_error:  # strict: ties keep the earlier weighting
                best_error, best = squared_errors[index], (weights, coefficients, predictions, index)
        weights, coefficients, predictions, index = best
        self.mean, self.std = solver.mean, solver.std
        self.coef = coefficients[:, index].copy()
        self.intercept = intercept
        self.alpha = self.alphas[index]
        self.group_weights = _group_weights(weights, self.feature_groups)
        self.validation_scores = np.array(
            [r2_score(validation_targets, predictions[:, column]) for column in range(len(self.alphas))]
        )
        self.validation_score = float(self.validation_scores[index])
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions: features (num_rows, num_features) → (num_rows,) float64."""
        self._check_fitted()
        features = _check_features(features, self.coef.shape[0])
        return _standardize(features, self.mean, self.std) @ self.coef + self.intercept

    def score(self, features: np.ndarray, targets: np.ndarray) -> float:
        """R² of the predictions on (features (num_rows, num_features), targets (num_rows,))."""
        return r2_score(targets, self.predict(features))

    def as_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe with the standardisation folded in: ``predict(x) = x @ weight.T + bias``.

        Returns:
            weight: (1, num_features); bias: (1,). Ready for ``torch.nn.Linear(num_features, 1)``.
        """
        self._check_fitted()
        weight = self.coef / self.std
        bias = self.intercept - float(self.mean @ weight)
        return weight[None, :], np.array([bias])

    def _check_fitted(self) -> None:
        if self.coef is None:
            raise RuntimeError("RidgeProbe is not fitted yet: call fit() first.")


# ----------------------------------------------------------------------------------------------------------------
# Softmax classification
# ----------------------------------------------------------------------------------------------------------------


class SoftmaxProbe:
    """Multinomial logistic regression (linear softmax) on standardised features, C chosen by validation accuracy.

    After :meth:`fit`:
        weight: (num_classes, num_features) on standardised features; bias: (num_classes,).
        labels: the class names, in logit order (sorted); ``predict`` returns ``labels[argmax(logits)]``.
        mean, std: (num_features,) train statistics.
        inverse_regularization: the selected C (scikit-learn's convention: larger C = weaker L2 penalty).
        group_weights: with ``feature_groups``, the selected weight of each group; else None.
        validation_score: accuracy of the selected C; validation_scores: (num_C,) accuracy of every C (under the
        selected weighting).

    With two classes scikit-learn fits one logit z; it is stored as the two logits (−z/2, z/2), whose softmax is
    exactly the logistic model, so every probe is a (num_classes, num_features) linear layer.

    Args:
        inverse_regularizations: Grid of C, tried in order; ties keep the first (strongest regularisation).
        max_iterations: L-BFGS iteration limit per C.
        feature_groups: Sizes of consecutive feature groups: their weighting is chosen on validation together
            with C (:func:`group_weightings`). None: one C for all features.
    """

    def __init__(
        self,
        inverse_regularizations: Sequence[float] = C_GRID,
        max_iterations: int = 1000,
        feature_groups: Sequence[int] | None = None,
    ) -> None:
        if len(inverse_regularizations) == 0 or any(value <= 0 for value in inverse_regularizations):
            raise ValueError(f"inverse_regularizations must be positive numbers, got {list(inverse_regularizations)}.")
        self.inverse_regularizations = tuple(float(value) for value in inverse_regularizations)
        self.max_iterations = max_iterations
        self.feature_groups = None if feature_groups is None else tuple(int(size) for size in feature_groups)
        self.weight: np.ndarray | None = None
        self.bias: np.ndarray | None = None
        self.labels: list | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.inverse_regularization: float | None = None
        self.group_weights: list[float] | None = None
        self.validation_score: float = math.nan
        self.validation_scores: np.ndarray | None = None

    def fit(
        self,
        train_features: np.ndarray,
        train_labels: np.ndarray | Sequence,
        validation_features: np.ndarray,
        validation_labels: np.ndarray | Sequence,
    ) -> SoftmaxProbe:
        """Fits on train with every C (and group weighting) and keeps the best by validation accuracy.

        Args:
            train_features: (num_train, num_features), finite.
            train_labels: (num_train,) class labels; at least two distinct values.
            validation_features: (num_validation, num_features), finite.
            validation_labels: (num_validation,); labels unseen in train simply count as errors.

        Returns:
            self.
        """
        train_features = _check_features(train_features, name="train_features")
        train_labels = np.asarray(train_labels).ravel()
        validation_labels = np.asarray(validation_labels).ravel()
        _check_same_length(train_features, train_labels)
        validation_features = _check_features(validation_features, train_features.shape[1], "validation_features")
        _check_same_length(validation_features, validation_labels)
        labels = np.unique(train_labels)
        if labels.size < 2:
            raise ValueError(f"SoftmaxProbe needs at least two classes in train, got {labels.tolist()}.")

        # Class indices in label order: scikit-learn refuses float labels (a dropout grid {0.0, 0.5}) as continuous.
        class_index = np.searchsorted(labels, train_labels)
        self.mean, self.std = standardization_statistics(train_features)
        standardized_train = _standardize(train_features, self.mean, self.std)
        standardized_validation = _standardize(validation_features, self.mean, self.std)
        best_score, best = -math.inf, None
        for weights in group_weightings(self.feature_groups, train_features.shape[1]):
            kept = weights > 0  # a left-out group is no column at all, not a column of zeros
            candidates, scores = self._fit_path(
                standardized_train[:, kept] * weights[kept], class_index, labels, validation_labels,
                standardized_validation[:, kept] * weights[kept],
            )  # fmt: skip
            index = int(np.argmax(scores))
            if best is None or scores[index] > best_score:  # strict: ties keep the earlier weighting
                best_score, best = scores[index], (scores, index, candidates, weights, kept)
        scores, index, candidates, weights, kept = best
        weight = np.zeros((candidates[index][0].shape[0], train_features.shape[1]))
        weight[:, kept] = candidates[index][0] * weights[kept]  # back onto the unweighted standardised features
        self.weight, self.bias = weight, candidates[index][1]
        self.labels = labels.tolist()
        self.inverse_regularization = self.inverse_regularizations[index]
        self.group_weights = _group_weights(weights, self.feature_groups)
        self.validation_scores = np.array(scores)
        self.validation_score = float(scores[index])
        return self

    def _fit_path(
        self,
        standardized_train: np.ndarray,
        class_index: np.ndarray,
        labels: np.ndarray,
        validation_labels: np.ndarray,
        standardized_validation: np.ndarray,
    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float]]:
        """One fit per C along the grid: the (weight, bias) of each and its validation accuracy."""
        from sklearn.linear_model import LogisticRegression  # lazy: keeps `import hyperrep_hf.probing.probes` light

        # Warm starts along the C path: each fit starts from the previous (more regularised) solution.
        classifier = LogisticRegression(max_iter=self.max_iterations, warm_start=True)
        candidates, scores = [], []
        for inverse_regularization in self.inverse_regularizations:
            classifier.set_params(C=inverse_regularization)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                classifier.fit(standardized_train, class_index)
            if any("converge" in str(warning.message).lower() for warning in caught):
                logger.warning(
                    "SoftmaxProbe: L-BFGS did not converge for C=%g in %d iterations.",
                    inverse_regularization,
                    self.max_iterations,
                )
            weight, bias = _softmax_parameters(classifier.coef_, classifier.intercept_)
            candidates.append((weight, bias))
            scores.append(accuracy(validation_labels, labels[np.argmax(standardized_validation @ weight.T + bias, 1)]))
        return candidates, scores

    def logits(self, features: np.ndarray) -> np.ndarray:
        """Class logits: features (num_rows, num_features) → (num_rows, num_classes)."""
        self._check_fitted()
        features = _check_features(features, self.weight.shape[1])
        return _standardize(features, self.mean, self.std) @ self.weight.T + self.bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted labels: features (num_rows, num_features) → (num_rows,) values from ``labels``."""
        return np.asarray(self.labels)[np.argmax(self.logits(features), axis=1)]

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities: features (num_rows, num_features) → (num_rows, num_classes)."""
        logits = self.logits(features)
        logits -= logits.max(axis=1, keepdims=True)  # stable softmax
        probabilities = np.exp(logits)
        return probabilities / probabilities.sum(axis=1, keepdims=True)

    def score(self, features: np.ndarray, labels: np.ndarray | Sequence) -> float:
        """Accuracy on (features (num_rows, num_features), labels (num_rows,))."""
        return accuracy(labels, self.predict(features))

    def as_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """Logits with the standardisation folded in: ``logits(x) = x @ weight.T + bias``.

        Returns:
            weight: (num_classes, num_features); bias: (num_classes,).
        """
        self._check_fitted()
        weight = self.weight / self.std[None, :]
        return weight, self.bias - weight @ self.mean

    def _check_fitted(self) -> None:
        if self.weight is None:
            raise RuntimeError("SoftmaxProbe is not fitted yet: call fit() first.")


def _softmax_parameters(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's (1 or C, d) coefficients → (C, d) softmax logits (binary: ±z/2, same probabilities)."""
    if coef.shape[0] == 1:
        return np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    return coef.copy(), intercept.copy()


# ----------------------------------------------------------------------------------------------------------------
# Running every target
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    """One number of an evaluation: a metric of one target's probe on one split.

    Attributes:
        target: Target column, e.g. ``"test_accuracy"``.
        task: ``"regression"`` or ``"classification"``.
        method: The representation probed, e.g. ``"hyper-representation"``, ``"W"``, ``"s(W)"``.
        metric: ``"r2"``, ``"kendall_tau"`` or ``"accuracy"``.
        split: The split the metric is computed on.
        value: The metric; None in :meth:`to_dict` when undefined (NaN).
        num_rows: Rows the metric was computed on.
        num_dropped: Rows of this split dropped for NaN/inf features or a missing target.
        alpha: Selected ridge α (regression), else None.
        inverse_regularization: Selected softmax C (classification), else None.
        selection_split: Split the hyper-parameter was selected on: ``"validation"``, or ``"train"`` with
            ``validation_fallback="train"``.
        group_weights: With ``feature_groups``, the selected weight of each feature group (1: full, 0: left
            out; :func:`group_weightings`), else None (and absent from :meth:`to_dict`).
    """

    target: str
    task: str
    method: str
    metric: str
    split: str
    value: float
    num_rows: int
    num_dropped: int = 0
    alpha: float | None = None
    inverse_regularization: float | None = None
    selection_split: str = "validation"
    group_weights: tuple[float, ...] | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (NaN values become None, so the output is strict JSON)."""
        record = asdict(self)
        if record["group_weights"] is None:
            del record["group_weights"]
        else:
            record["group_weights"] = list(record["group_weights"])
        if isinstance(record["value"], float) and math.isnan(record["value"]):
            record["value"] = None
        return record


@dataclass
class ProbeReport:
    """Everything :func:`fit_probes` produced.

    Attributes:
        results: One :class:`ProbeResult` per (target, split, metric).
        probes: The fitted probe of every target that was not skipped.
        skipped: Target → why it was skipped.
    """

    results: list[ProbeResult] = field(default_factory=list)
    probes: dict[str, RidgeProbe | SoftmaxProbe] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def probe_targets(
    features_by_split: Mapping[str, np.ndarray],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    categorical: Collection[str] = (),
    *,
    method: str = "hyper-representation",
    validation_fallback: str | None = None,
    alphas: Sequence[float] = ALPHA_GRID,
    inverse_regularizations: Sequence[float] = C_GRID,
    feature_groups: Sequence[int] | None = None,
) -> list[ProbeResult]:
    """Fits a probe per target and returns its metrics on every split; :func:`fit_probes` documents the arguments.

    Returns:
        One :class:`ProbeResult` per (target, split, metric); use :func:`fit_probes` to keep the fitted probes.
    """
    return fit_probes(
        features_by_split,
        targets_by_split,
        categorical,
        method=method,
        validation_fallback=validation_fallback,
        alphas=alphas,
        inverse_regularizations=inverse_regularizations,
        feature_groups=feature_groups,
    ).results


def fit_probes(
    features_by_split: Mapping[str, np.ndarray],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    categorical: Collection[str] = (),
    *,
    method: str = "hyper-representation",
    validation_fallback: str | None = None,
    alphas: Sequence[float] = ALPHA_GRID,
    inverse_regularizations: Sequence[float] = C_GRID,
    feature_groups: Sequence[int] | None = None,
) -> ProbeReport:
    """Fits a ridge probe per regression target and a softmax probe per categorical target.

    Regression targets get ``r2`` and ``kendall_tau`` on every split, categorical targets ``accuracy``.
    Per target, rows with non-finite features or a missing target (NaN/None) are dropped and counted. A target
    that is missing from train, all missing, or constant on train (one class) is skipped with a logged warning.

    Args:
        features_by_split: Split → (num_rows, num_features). Must contain ``"train"``; ``"validation"`` selects
            the hyper-parameter; every split present (e.g. ``"test"``) is scored.
        targets_by_split: Split → target name → (num_rows,) values (numbers; labels for categorical targets).
        categorical: Names of the classification targets (e.g. ``{"activation", "init", "optimizer"}``).
        method: Name of the representation, copied into every result.
        validation_fallback: None (default): a missing validation split is an error. ``"train"``: select on the
            train split instead (optimistic; recorded as ``selection_split="train"`` in every result).
        alphas: Ridge grid.
        inverse_regularizations: Softmax C grid.
        feature_groups: Sizes of consecutive feature groups (z̄ ⊕ s(W): ``(latent_dim, num_statistics)``): each
            probe chooses the groups' weighting on validation with its α or C (:func:`group_weightings`),
            recorded as ``group_weights`` in every result. None: one α or C for all features (the paper's probe).

    Returns:
        A :class:`ProbeReport` with the results, the fitted probes and the skipped targets.

    Raises:
        ValueError: No train split, no validation split without ``validation_fallback="train"``, features of
            different widths, lengths that do not match, or a non-numeric regression target.
    """
    features_by_split = {
        split: _check_features(values, name=f"features[{split!r}]") for split, values in features_by_split.items()
    }
    _check_splits(features_by_split, targets_by_split, validation_fallback)
    report = ProbeReport()
    solvers: dict[bytes, _RidgeSolver] = {}  # keyed by the train row mask: one Gram matrix per distinct row set
    for target in _target_names(targets_by_split):
        task = "classification" if target in categorical else "regression"
        rows = _usable_rows(features_by_split, targets_by_split, target, task)
        reason = _skip_reason(rows, target, validation_fallback)
        if reason is not None:
            logger.warning("Probing %s (%s): skipping target %r: %s.", method, task, target, reason)
            report.skipped[target] = reason
            continue
        selection_split = "validation" if "validation" in rows else "train"
        if selection_split == "train":
            logger.warning("Probing %s: target %r selects its regularisation on train (optimistic).", method, target)
        probe = _fit_target_probe(
            task, rows, selection_split, solvers, alphas, inverse_regularizations, feature_groups
        )
        report.probes[target] = probe
        report.results.extend(_score_target(probe, target, task, method, rows, selection_split))
    return report


@dataclass
class _SplitRows:
    """One split's usable rows for one target."""

    features: np.ndarray  # (num_kept, num_features)
    targets: np.ndarray  # (num_kept,)
    mask: np.ndarray  # (num_rows,) bool, the kept rows
    num_dropped: int


def check_probe_splits(
    splits: Sequence[str], validation_fallback: str | None, where: str = "features_by_split"
) -> None:
    """The probes' rules on splits: a train split, and a validation split unless ``validation_fallback="train"``.

    Args:
        splits: The split names at hand.
        validation_fallback: None, or "train" to choose the regularisation on the train split.
        where: What holds the splits, for the message (``"Zoo 'tetris_seed'"``).
    """
    if validation_fallback not in (None, "train"):
        raise ValueError(f"validation_fallback must be None or 'train', got {validation_fallback!r}.")
    if "train" not in splits:
        raise ValueError(f"{where} has no 'train' split (splits: {list(splits)}); probes need one.")
    if "validation" not in splits and validation_fallback is None:
        raise ValueError(
            f"{where} has no validation split (splits: {list(splits)}) to choose the probes' regularisation. "
            "Pass validation_fallback='train' (CLI: --validation-fallback train) to choose it on the train split "
            "instead (optimistic); the report then says so."
        )


def _check_splits(
    features_by_split: Mapping[str, np.ndarray],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    validation_fallback: str | None,
) -> None:
    check_probe_splits(list(features_by_split), validation_fallback)
    widths = {split: features.shape[1] for split, features in features_by_split.items()}
    if len(set(widths.values())) > 1:
        raise ValueError(f"Splits have different numbers of features: {widths}.")
    for split, features in features_by_split.items():
        for target, values in targets_by_split.get(split, {}).items():
            if len(values) != features.shape[0]:
                raise ValueError(
                    f"Target {target!r} has {len(values)} rows in split {split!r}, the features have "
                    f"{features.shape[0]}."
                )


def _target_names(targets_by_split: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """Every target named in any split, in first-seen order (train first)."""
    ordered_splits = sorted(targets_by_split, key=lambda split: split != "train")
    names: dict[str, None] = {}
    for split in ordered_splits:
        names.update(dict.fromkeys(targets_by_split[split]))
    return list(names)


def _missing_mask(values: np.ndarray) -> np.ndarray:
    """(num_rows,) True where a value is missing: NaN for numbers; None or NaN in object arrays."""
    if values.dtype.kind in "fc":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.array([value is None or (isinstance(value, float) and math.isnan(value)) for value in values])
    return np.zeros(values.shape[0], dtype=bool)


def _usable_rows(
    features_by_split: Mapping[str, np.ndarray],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    target: str,
    task: str,
) -> dict[str, _SplitRows]:
    """Split → the rows usable for ``target``: finite features and a present target. Splits without it are left out."""
    rows = {}
    for split, features in features_by_split.items():
        if target not in targets_by_split.get(split, {}):
            continue
        values = np.asarray(targets_by_split[split][target])
        if task == "regression":
            if values.dtype.kind not in "biuf" and not (values.dtype.kind == "O" and _is_numeric(values)):
                raise ValueError(
                    f"Regression target {target!r} has non-numeric values (dtype {values.dtype}) in split "
                    f"{split!r}; list it in `categorical` if it is a class label."
                )
            values = values.astype(np.float64)
        mask = np.isfinite(features).all(axis=1) & ~_missing_mask(values)
        num_dropped = int(mask.size - mask.sum())
        if num_dropped:
            logger.info(
                "Target %r: dropped %d of %d %s rows (NaN/inf features or missing target).",
                target,
                num_dropped,
                mask.size,
                split,
            )
        rows[split] = _SplitRows(features[mask], values[mask], mask, num_dropped)
    return rows


def _is_numeric(values: np.ndarray) -> bool:
    return all(value is None or isinstance(value, int | float | np.number) for value in values)


def _skip_reason(rows: dict[str, _SplitRows], target: str, validation_fallback: str | None) -> str | None:
    """Why a target cannot be probed, or None. Drops a validation split that has no usable rows."""
    train = rows.get("train")
    if train is None:
        return "missing from the train split"
    if train.targets.size == 0:
        return "no usable train rows (all targets missing or features non-finite)"
    if np.unique(train.targets).size < 2:
        return f"constant on the train split (every value is {train.targets[0]!r})"
    validation = rows.get("validation")
    if validation is None or validation.targets.size == 0:
        rows.pop("validation", None)
        if validation_fallback != "train":
            return (
                "missing or all-missing in the validation split (pass validation_fallback='train' to select on train)"
            )
    return None


def _fit_target_probe(
    task: str,
    rows: Mapping[str, _SplitRows],
    selection_split: str,
    solvers: dict[bytes, _RidgeSolver],
    alphas: Sequence[float],
    inverse_regularizations: Sequence[float],
    feature_groups: Sequence[int] | None,
) -> RidgeProbe | SoftmaxProbe:
    train, selection = rows["train"], rows[selection_split]
    if task == "classification":
        return SoftmaxProbe(inverse_regularizations, feature_groups=feature_groups).fit(
            train.features, train.targets, selection.features, selection.targets
        )
    key = np.packbits(train.mask).tobytes()
    if key not in solvers:
        solvers[key] = _RidgeSolver(train.features)
    return RidgeProbe(alphas, feature_groups)._fit_with_solver(
        solvers[key], train.targets, selection.features, selection.targets
    )


def _score_target(
    probe: RidgeProbe | SoftmaxProbe,
    target: str,
    task: str,
    method: str,
    rows: Mapping[str, _SplitRows],
    selection_split: str,
) -> list[ProbeResult]:
    results = []
    group_weights = None if probe.group_weights is None else tuple(probe.group_weights)
    for split, split_rows in rows.items():
        predictions = probe.predict(split_rows.features) if split_rows.targets.size else split_rows.targets
        if task == "regression":
            values = {
                "r2": r2_score(split_rows.targets, predictions),
                "kendall_tau": kendall_tau(split_rows.targets, predictions),
            }
        else:
            values = {"accuracy": accuracy(split_rows.targets, predictions)}
        for metric, value in values.items():
            results.append(
                ProbeResult(
                    target=target,
                    task=task,
                    method=method,
                    metric=metric,
                    split=split,
                    value=value,
                    num_rows=int(split_rows.targets.size),
                    num_dropped=split_rows.num_dropped,
                    alpha=probe.alpha if task == "regression" else None,
                    inverse_regularization=probe.inverse_regularization if task == "classification" else None,
                    selection_split=selection_split,
                    group_weights=group_weights,
                )
            )
    return results


# ----------------------------------------------------------------------------------------------------------------
# A small MLP probe (beside the linear ones): the peers' StatNN head, and a non-linear head on z
# ----------------------------------------------------------------------------------------------------------------


class MLPProbe:
    """A small MLP on standardised features, trained with Adam and early stopping on the validation split.

    ``[Linear → ReLU] × len(hidden_sizes) → Linear``; regression targets are standardised with the train mean/std
    for training and mapped back in :meth:`predict`. Everything random (initialisation, batch order) comes from
    ``seed``; with the same inputs, seed and thread count the fit is bit-identical. The weights of the epoch with
    the lowest validation loss are kept.

    After :meth:`fit`:
        layers: [(weight (out, in), bias (out,)), …] on standardised features, float64.
        mean, std: (num_features,) train statistics of the features.
        target_mean, target_std: regression target statistics (0 and 1 for classification).
        labels: class names in logit order (classification), else None.
        best_epoch, epochs_trained: where early stopping stopped.
        validation_score: R² (regression) or accuracy (classification) of the kept weights on validation.

    Args:
        task: ``"regression"`` or ``"classification"``.
        hidden_sizes: Widths of the hidden layers.
        learning_rate: Adam step size.
        weight_decay: Adam L2 penalty.
        batch_size: Rows per step.
        max_epochs: Upper bound on passes over train.
        patience: Epochs without a better validation loss before stopping.
        seed: Seed of the initialisation and of the batch order.
    """

    alpha = None  # no ridge α / softmax C / group weights: the fields ProbeResult reads are None
    inverse_regularization = None
    group_weights = None

    def __init__(
        self,
        task: str = "regression",
        hidden_sizes: Sequence[int] = (64, 64),
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        max_epochs: int = 500,
        patience: int = 25,
        seed: int = 0,
    ) -> None:
        if task not in ("regression", "classification"):
            raise ValueError(f"task must be 'regression' or 'classification', got {task!r}.")
        if not hidden_sizes or any(int(size) < 1 for size in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers, got {list(hidden_sizes)}.")
        if max_epochs < 1 or patience < 1 or batch_size < 1:
            raise ValueError(
                f"max_epochs, patience and batch_size must be ≥ 1, got {max_epochs}, {patience}, {batch_size}."
            )
        self.task = task
        self.hidden_sizes = tuple(int(size) for size in hidden_sizes)
        self.learning_rate, self.weight_decay = float(learning_rate), float(weight_decay)
        self.batch_size, self.max_epochs, self.patience, self.seed = batch_size, max_epochs, patience, seed
        self.layers: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.target_mean, self.target_std = 0.0, 1.0
        self.labels: list | None = None
        self.best_epoch = self.epochs_trained = 0
        self.validation_score: float = math.nan

    def fit(
        self,
        train_features: np.ndarray,
        train_targets: np.ndarray | Sequence,
        validation_features: np.ndarray,
        validation_targets: np.ndarray | Sequence,
    ) -> MLPProbe:
        """Trains on train, stops early on validation; see the class docstring. Returns self."""
        import torch
        from torch import nn

        train_features = _check_features(train_features, name="train_features")
        validation_features = _check_features(validation_features, train_features.shape[1], "validation_features")
        train_targets, validation_targets = np.asarray(train_targets).ravel(), np.asarray(validation_targets).ravel()
        _check_same_length(train_features, train_targets)
        _check_same_length(validation_features, validation_targets)
        if train_features.shape[0] < 2 or validation_features.shape[0] < 1:
            raise ValueError("MLPProbe needs at least 2 train rows and 1 validation row.")
        self.mean, self.std = standardization_statistics(train_features)
        inputs = {
            "train": torch.from_numpy(_standardize(train_features, self.mean, self.std)).float(),
            "validation": torch.from_numpy(_standardize(validation_features, self.mean, self.std)).float(),
        }
        if self.task == "regression":
            train_targets = train_targets.astype(np.float64)
            self.target_mean = float(train_targets.mean())
            self.target_std = float(train_targets.std()) or 1.0
            encode = lambda values: torch.from_numpy((values.astype(np.float64) - self.target_mean) / self.target_std)  # noqa: E731
            targets = {"train": encode(train_targets).float(), "validation": encode(validation_targets).float()}
            loss_function: nn.Module = nn.MSELoss()
            num_outputs = 1
        else:
            self.labels = np.unique(train_targets).tolist()
            if len(self.labels) < 2:
                raise ValueError(f"MLPProbe needs at least two classes in train, got {self.labels}.")
            index = {label: position for position, label in enumerate(self.labels)}
            targets = {
                "train": torch.tensor([index[label] for label in train_targets]),
                "validation": torch.tensor([index.get(label, -100) for label in validation_targets]),
            }
            loss_function = nn.CrossEntropyLoss(ignore_index=-100)
            num_outputs = len(self.labels)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            sizes = [train_features.shape[1], *self.hidden_sizes]
            modules: list[nn.Module] = []
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):  # noqa: RUF007
                modules += [nn.Linear(fan_in, fan_out), nn.ReLU()]
            network = nn.Sequential(*modules, nn.Linear(sizes[-1], num_outputs))
        optimizer = torch.optim.Adam(network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)

        def outputs(split: str) -> torch.Tensor:
            result = network(inputs[split])
            return result.squeeze(-1) if self.task == "regression" else result

        best_loss, best_state, since_best = math.inf, None, 0
        num_rows = inputs["train"].shape[0]
        for epoch in range(1, self.max_epochs + 1):
            network.train()
            for batch in torch.randperm(num_rows, generator=generator).split(self.batch_size):
                optimizer.zero_grad()
                result = network(inputs["train"][batch])
                result = result.squeeze(-1) if self.task == "regression" else result
                loss_function(result, targets["train"][batch]).backward()
                optimizer.step()
            network.eval()
            with torch.no_grad():
                validation_loss = float(loss_function(outputs("validation"), targets["validation"]))
            self.epochs_trained = epoch
            if validation_loss < best_loss - 1e-12:
                best_loss, since_best, self.best_epoch = validation_loss, 0, epoch
                best_state = [(m.weight.detach().double().clone(), m.bias.detach().double().clone())
                              for m in network if isinstance(m, nn.Linear)]  # fmt: skip
            else:
                since_best += 1
                if since_best >= self.patience:
                    break
        self.layers = [(weight.numpy(), bias.numpy()) for weight, bias in best_state]
        self.validation_score = self.score(validation_features, validation_targets)
        return self

    def _outputs(self, features: np.ndarray) -> np.ndarray:
        self._check_fitted()
        hidden = _standardize(_check_features(features, self.mean.shape[0]), self.mean, self.std)
        for weight, bias in self.layers[:-1]:
            hidden = np.maximum(hidden @ weight.T + bias, 0.0)
        weight, bias = self.layers[-1]
        return hidden @ weight.T + bias

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predictions: features (num_rows, num_features) → (num_rows,) values or labels (classification)."""
        outputs = self._outputs(features)
        if self.task == "regression":
            return outputs[:, 0] * self.target_std + self.target_mean
        return np.asarray(self.labels, dtype=object)[np.argmax(outputs, axis=1)]

    def score(self, features: np.ndarray, targets: np.ndarray | Sequence) -> float:
        """R² (regression) or accuracy (classification)."""
        predictions = self.predict(features)
        return r2_score(targets, predictions) if self.task == "regression" else accuracy(targets, predictions)

    def as_layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The layers with the feature standardisation folded into the first and the target scale into the last.

        ``x → relu(x @ W1.T + b1) → … → h @ Wk.T + bk`` then computes :meth:`predict`'s values (regression) or the
        class logits (classification) directly from raw features.
        """
        self._check_fitted()
        layers = [(weight.copy(), bias.copy()) for weight, bias in self.layers]
        first_weight, first_bias = layers[0]
        folded = first_weight / self.std[None, :]
        layers[0] = (folded, first_bias - folded @ self.mean)
        if self.task == "regression":
            last_weight, last_bias = layers[-1]
            layers[-1] = (last_weight * self.target_std, last_bias * self.target_std + self.target_mean)
        return layers

    def _check_fitted(self) -> None:
        if self.layers is None:
            raise RuntimeError("MLPProbe is not fitted yet: call fit() first.")


def fit_mlp_probes(
    features_by_split: Mapping[str, np.ndarray],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    categorical: Collection[str] = (),
    *,
    method: str = "hyper-representation",
    validation_fallback: str | None = None,
    seed: int = 0,
    **mlp_options,
) -> ProbeReport:
    """:func:`fit_probes` with an :class:`MLPProbe` per target instead of the linear probes (same rows, same metrics).

    Args:
        features_by_split: As in :func:`fit_probes`.
        targets_by_split: As in :func:`fit_probes`.
        categorical: As in :func:`fit_probes`.
        method: As in :func:`fit_probes`.
        validation_fallback: As in :func:`fit_probes`.
        seed: The MLPs' seed.
        **mlp_options: Passed to :class:`MLPProbe` (``hidden_sizes``, ``max_epochs``, …).
    """
    features_by_split = {
        split: _check_features(values, name=f"features[{split!r}]") for split, values in features_by_split.items()
    }
    _check_splits(features_by_split, targets_by_split, validation_fallback)
    report = ProbeReport()
    for target in _target_names(targets_by_split):
        task = "classification" if target in categorical else "regression"
        rows = _usable_rows(features_by_split, targets_by_split, target, task)
        reason = _skip_reason(rows, target, validation_fallback)
        if reason is not None:
            logger.warning("MLP probe on %s (%s): skipping target %r: %s.", method, task, target, reason)
            report.skipped[target] = reason
            continue
        selection_split = "validation" if "validation" in rows else "train"
        train, selection = rows["train"], rows[selection_split]
        probe = MLPProbe(task, seed=seed, **mlp_options).fit(
            train.features, train.targets, selection.features, selection.targets
        )
        report.probes[target] = probe
        report.results.extend(_score_target(probe, target, task, method, rows, selection_split))
    return report
