"""Group-weighted probes on z̄ ⊕ s(W): each feature group's weight chosen on validation with α (or C).

Checked by a second route: a group weight w is ridge with α / w² on that group, so the probe's coefficients are
compared with the closed-form solution of that penalty; a left-out group is the probe on the other group alone.
"""

import json

import numpy as np
import pytest

from hyperrep_hf.probing.probes import (
    ALPHA_GRID,
    GROUP_SHRINKAGE,
    RidgeProbe,
    SoftmaxProbe,
    fit_probes,
    group_weightings,
    standardization_statistics,
)


def two_blocks(rng, num_rows, signal_width, noise_width, noise=0.5):
    """A signal block that carries the target linearly and a block of pure noise columns."""
    signal = rng.normal(size=(num_rows, signal_width)) * rng.uniform(0.5, 3.0, signal_width)
    junk = rng.normal(size=(num_rows, noise_width)) * rng.uniform(0.5, 3.0, noise_width) + 4.0
    targets = signal @ rng.normal(size=signal_width) + noise * rng.normal(size=num_rows)
    return signal, junk, targets


def closed_form(train, targets, alpha, weights):
    """Ridge on standardised features with penalty α / w² per feature (w = 0: the feature is left out)."""
    mean, std = standardization_statistics(train)
    x = (train - mean) / std
    kept = weights > 0
    penalty = np.diag(alpha / weights[kept] ** 2)
    coef = np.zeros(train.shape[1])
    coef[kept] = np.linalg.solve(x[:, kept].T @ x[:, kept] + penalty, x[:, kept].T @ (targets - targets.mean()))
    return coef


def test_group_weightings_try_each_group_shrunk_or_left_out_after_equal_weights():
    weightings = group_weightings((3, 2), 5)
    assert np.array_equal(weightings[0], np.ones(5))
    assert len(weightings) == 1 + 2 * len(GROUP_SHRINKAGE)
    groups = {tuple(w[[0, 3]]) for w in weightings[1:]}
    assert groups == {(f, 1.0) for f in GROUP_SHRINKAGE} | {(1.0, f) for f in GROUP_SHRINKAGE}
    for weights in weightings:  # constant within each group
        assert len(set(weights[:3])) == 1 and len(set(weights[3:])) == 1
    assert len(group_weightings(None, 4)) == 1 and len(group_weightings((4,), 4)) == 1
    for bad in [(3, 3), (5, 0), (-1, 6)]:
        with pytest.raises(ValueError, match="feature_groups"):
            group_weightings(bad, 5)
    with pytest.raises(ValueError, match="feature_groups"):
        RidgeProbe(feature_groups=(2, 2)).fit(np.ones((4, 5)), np.arange(4.0), np.ones((2, 5)), np.arange(2.0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("num_train", [200, 30])  # primal (d ≤ n) and dual (d > n) solvers
def test_grouped_ridge_is_ridge_with_a_penalty_per_group(seed, num_train):
    rng = np.random.default_rng(seed)
    signal, junk, targets = two_blocks(rng, num_train + 60, 8, 40)
    features = np.hstack([signal, junk])
    train, validation = slice(0, num_train), slice(num_train, None)
    probe = RidgeProbe(feature_groups=(8, 40)).fit(
        features[train], targets[train], features[validation], targets[validation]
    )
    weights = np.repeat(probe.group_weights, (8, 40))
    assert probe.coef == pytest.approx(closed_form(features[train], targets[train], probe.alpha, weights), abs=1e-8)

    # The selected (weighting, α) is the best on validation over every candidate, each checked by the closed form.
    def validation_error(alpha, weights):
        coef = closed_form(features[train], targets[train], alpha, weights)
        predictions = (features[validation] - probe.mean) / probe.std @ coef + targets[train].mean()
        return np.mean((predictions - targets[validation]) ** 2)

    best = min(validation_error(a, w) for w in group_weightings((8, 40), 48) for a in ALPHA_GRID)
    chosen = np.mean((probe.predict(features[validation]) - targets[validation]) ** 2)
    assert chosen == pytest.approx(best, rel=1e-9)
    plain = RidgeProbe().fit(features[train], targets[train], features[validation], targets[validation])
    assert probe.validation_score >= plain.validation_score - 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_a_left_out_group_is_the_probe_on_the_other_group_alone(seed):
    rng = np.random.default_rng(seed)
    signal, junk, targets = two_blocks(rng, 300, 6, 60, noise=1.0)
    features = np.hstack([signal, junk])
    probe = RidgeProbe(feature_groups=(6, 60)).fit(features[:100], targets[:100], features[100:], targets[100:])
    assert probe.group_weights[1] < 1  # 60 noise columns on 100 rows: the probe shrinks or drops them
    alone = RidgeProbe().fit(signal[:100], targets[:100], signal[100:], targets[100:])
    if probe.group_weights == [1.0, 0.0]:
        assert probe.coef[6:] == pytest.approx(0.0, abs=0) and probe.coef[:6] == pytest.approx(alone.coef)
    weight, bias = probe.as_linear()  # still one affine map on the raw features
    assert features @ weight[0] + bias[0] == pytest.approx(probe.predict(features))


def test_grouped_probe_beats_the_shared_alpha_on_held_out_rows_when_one_block_is_noise():
    # Averaged over draws: one α for both blocks over-shrinks the signal or under-shrinks the noise.
    gains = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        signal, junk, targets = two_blocks(rng, 1100, 5, 80, noise=1.0)
        features = np.hstack([signal, junk])
        parts = (slice(0, 120), slice(120, 200), slice(200, None))
        plain = RidgeProbe().fit(features[parts[0]], targets[parts[0]], features[parts[1]], targets[parts[1]])
        grouped = RidgeProbe(feature_groups=(5, 80)).fit(
            features[parts[0]], targets[parts[0]], features[parts[1]], targets[parts[1]]
        )
        gains.append(
            grouped.score(features[parts[2]], targets[parts[2]]) - plain.score(features[parts[2]], targets[parts[2]])
        )
    assert np.mean(gains) > 0.01


@pytest.mark.parametrize("seed", range(3))
def test_grouped_softmax_keeps_its_weights_on_the_unweighted_features(seed):
    rng = np.random.default_rng(seed)
    signal, junk, _ = two_blocks(rng, 400, 4, 50)
    labels = np.array(["a", "b", "c"])[np.argmax(signal[:, :3], axis=1)]
    features = np.hstack([signal, junk])
    probe = SoftmaxProbe(feature_groups=(4, 50)).fit(features[:150], labels[:150], features[150:], labels[150:])
    plain = SoftmaxProbe().fit(features[:150], labels[:150], features[150:], labels[150:])
    assert probe.validation_score >= plain.validation_score
    assert probe.weight.shape == (3, 54) and len(probe.group_weights) == 2
    assert probe.group_weights == [1.0, 0.0]  # 50 noise columns on 150 rows: left out
    assert not probe.weight[:, 4:].any()  # no weight on them, and the same probe as on the signal alone
    alone = SoftmaxProbe().fit(signal[:150], labels[:150], signal[150:], labels[150:])  # the same C path
    assert alone.inverse_regularization == probe.inverse_regularization
    # The same convex problem, solved by L-BFGS to its tolerance from inputs equal up to rounding.
    assert probe.predict_proba(features) == pytest.approx(alone.predict_proba(signal), abs=1e-3)
    weight, bias = probe.as_linear()
    assert np.array_equal(np.asarray(probe.labels)[np.argmax(features @ weight.T + bias, 1)], probe.predict(features))


def test_fit_probes_records_the_group_weights_only_where_groups_were_given():
    rng = np.random.default_rng(0)
    signal, junk, targets = two_blocks(rng, 300, 4, 20)
    features = np.hstack([signal, junk])
    classes = np.where(signal[:, 0] > 0, "up", "down")
    parts = {"train": slice(0, 180), "validation": slice(180, 240), "test": slice(240, None)}
    features_by_split = {name: features[rows] for name, rows in parts.items()}
    targets_by_split = {name: {"y": targets[rows], "c": classes[rows]} for name, rows in parts.items()}
    grouped = fit_probes(features_by_split, targets_by_split, {"c"}, feature_groups=(4, 20))
    plain = fit_probes(features_by_split, targets_by_split, {"c"})
    for result in grouped.results:
        record = json.loads(json.dumps(result.to_dict()))
        assert record["group_weights"] == list(grouped.probes[result.target].group_weights)
        assert len(record["group_weights"]) == 2
    assert all("group_weights" not in result.to_dict() for result in plain.results)
    assert all(probe.group_weights is None for probe in plain.probes.values())


def test_a_shrunk_group_is_folded_back_so_the_probe_predicts_what_validation_scored():
    """The weights a probe was selected with are folded into its coefficients: predict() on the validation rows gives
    exactly the validation score it was chosen by, for shrunk groups too (where a lost factor would show)."""
    shrunk = 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        strong, weak = rng.normal(size=(300, 3)), rng.normal(size=(300, 12))
        scores = strong @ rng.normal(size=(3, 3)) + 0.6 * weak[:, :3] + rng.normal(size=(300, 3))
        labels = np.array(["a", "b", "c"])[np.argmax(scores, axis=1)]
        targets = scores[:, 0]
        features = np.hstack([strong, weak])
        train, validation = slice(0, 120), slice(120, None)
        softmax = SoftmaxProbe(feature_groups=(3, 12)).fit(
            features[train], labels[train], features[validation], labels[validation]
        )
        ridge = RidgeProbe(feature_groups=(3, 12)).fit(
            features[train], targets[train], features[validation], targets[validation]
        )
        assert softmax.score(features[validation], labels[validation]) == softmax.validation_score
        assert ridge.score(features[validation], targets[validation]) == pytest.approx(ridge.validation_score)
        shrunk += sum(0 < weight < 1 for weight in [*softmax.group_weights, *ridge.group_weights])
    assert shrunk >= 4  # the draws exercise shrunk groups, not only full or left-out ones
