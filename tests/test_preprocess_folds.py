"""Seeded K-fold splits: plain stratified, and grouped so that a lot never sits on both sides."""

from __future__ import annotations

import numpy as np

from waferscope.data.preprocess import grouped_stratified_kfold, stratified_kfold


def _labels_and_lots():
    rng = np.random.default_rng(0)
    labels = np.array(["none"] * 60 + ["Loc"] * 30 + ["Scratch"] * 30)
    lots = np.array([f"lot{i}" for i in rng.integers(0, 40, len(labels))])
    return labels, lots


def test_grouped_folds_keep_lots_apart_and_cover_every_map_once():
    labels, lots = _labels_and_lots()
    folds = list(grouped_stratified_kfold(labels, lots, n_splits=5, seed=0))
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(labels)))
    for train, test in folds:
        assert not set(lots[train]) & set(lots[test])
        assert set(labels[test]) == {"none", "Loc", "Scratch"}   # still stratified enough to see every class
    again = list(grouped_stratified_kfold(labels, lots, n_splits=5, seed=0))
    assert all((a[1] == b[1]).all() for a, b in zip(folds, again))   # seeded


def test_plain_folds_mix_lots():
    labels, lots = _labels_and_lots()
    shared = [set(lots[train]) & set(lots[test]) for train, test in stratified_kfold(labels, 5, seed=0)]
    assert any(shared)   # what the grouped split exists to prevent
