"""Split the catalog into train / val / test, and val / test into queries and a gallery.

Evaluation mimics the product: a shopper's photo (query) is searched against catalog photos
(gallery) of products the model never trained on. Hence the unit of splitting is the
duplicate group (a product plus every copy of its photos), never a single image; and every
category must appear in train and as both query and gallery in val and test.

Our own code because scikit-learn has no splitter that is grouped *and* stratified *and*
takes fractions (StratifiedGroupKFold gives folds, not a 70/15/15 cut).
"""

from __future__ import annotations

import logging
import zlib
from typing import Any

import numpy as np
import pandas as pd

from shoplens.data.catalog import CATEGORY, GALLERY, GROUP_ID, QUERY, ROLE, SPLIT, CatalogError

logger = logging.getLogger(__name__)

# 1 train group, and 1 query + 1 gallery group in each of val and test.
MIN_GROUPS_PER_CATEGORY = 5


def split_catalog(df: pd.DataFrame, split_cfg: Any, seed: int) -> pd.DataFrame:
    """A copy of ``df`` (which needs ``group_id`` and ``category``) with ``split`` and ``role``.

    Reproducible: the same seed and catalog give the same split. Each category is shuffled
    with its own generator seeded by (seed, category name), so adding one category does not
    reshuffle the others.
    """
    val_fraction = float(split_cfg.val_fraction)
    test_fraction = float(split_cfg.test_fraction)
    query_fraction = float(split_cfg.query_fraction)
    if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
        raise CatalogError(
            "split fractions must satisfy 0 < val_fraction, 0 < test_fraction and "
            f"val_fraction + test_fraction < 1; got {val_fraction} and {test_fraction}"
        )
    if not 0 < query_fraction < 1:
        raise CatalogError(
            f"query_fraction must lie strictly between 0 and 1, got {query_fraction}"
        )

    group_category = _category_of_each_group(df)
    too_small = {
        category: len(groups)
        for category, groups in group_category.groupby(group_category).groups.items()
        if len(groups) < MIN_GROUPS_PER_CATEGORY
    }
    if too_small:
        listing = ", ".join(f"'{name}' has {count}" for name, count in sorted(too_small.items()))
        raise CatalogError(
            f"too few products to split: {listing} product group(s); each category needs at "
            f"least {MIN_GROUPS_PER_CATEGORY} (1 for train, and 1 query + 1 gallery in each of "
            "val and test). Add products to these categories or remove them from the catalog."
        )

    split_of_group: dict[int, str] = {}
    role_of_group: dict[int, str] = {}
    for category, groups in sorted(group_category.groupby(group_category).groups.items()):
        rng = np.random.default_rng([seed, zlib.crc32(str(category).encode("utf-8"))])
        shuffled = rng.permutation(np.sort(np.asarray(groups, dtype=np.int64)))
        n_val, n_test = _split_sizes(len(shuffled), val_fraction, test_fraction)
        parts = {
            "val": shuffled[:n_val],
            "test": shuffled[n_val : n_val + n_test],
            "train": shuffled[n_val + n_test :],
        }
        for split, members in parts.items():
            n_query = min(max(round(len(members) * query_fraction), 1), len(members) - 1)
            for position, group in enumerate(members):
                split_of_group[int(group)] = split
                role_of_group[int(group)] = (
                    "" if split == "train" else (QUERY if position < n_query else GALLERY)
                )

    out = df.copy()
    out[SPLIT] = out[GROUP_ID].map(split_of_group)
    out[ROLE] = out[GROUP_ID].map(role_of_group)
    return out


def _category_of_each_group(df: pd.DataFrame) -> pd.Series:
    """Category per group_id; a group spanning categories (a copy filed twice) takes its
    most common one (ties: alphabetical), so the group still moves as one."""
    counts = df.groupby([GROUP_ID, CATEGORY]).size().reset_index(name="n")
    counts = counts.sort_values(["n", CATEGORY], ascending=[False, True], kind="stable")
    first = counts.drop_duplicates(GROUP_ID).set_index(GROUP_ID)[CATEGORY]
    mixed = int((counts.groupby(GROUP_ID).size() > 1).sum())
    if mixed:
        logger.warning(
            "%d duplicate group(s) span several categories; each goes by its "
            "most common category for splitting",
            mixed,
        )
    return first.sort_index()


def _split_sizes(n_groups: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Group counts for val and test: the fractions, rounded, but at least 2 each (query +
    gallery) and leaving at least 1 group for train."""
    n_val = max(2, round(n_groups * val_fraction))
    n_test = max(2, round(n_groups * test_fraction))
    while n_groups - n_val - n_test < 1:
        if n_val >= n_test and n_val > 2:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test
