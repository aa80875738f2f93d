"""Search ranked by cosine + the category head's log prior: exact, and what evaluate measures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from shoplens.evaluation.retrieval import prior_bias, recall_at_k
from shoplens.search import CatalogIndex, IndexConfig, category_log_prior, search_with_prior

CATEGORIES = ["bag", "coat", "dress", "sandal"]
DIM = 16


def _catalog(rng, products: int = 300, photos: int = 2):
    """``products`` products of random categories, ``photos`` photos each, on a unit sphere."""
    rows = pd.DataFrame(
        {
            "product_id": [f"p{i}" for i in range(products) for _ in range(photos)],
            "category": [
                CATEGORIES[c] for c in rng.integers(0, 4, products) for _ in range(photos)
            ],
            "path": [f"{i}_{j}.png" for i in range(products) for j in range(photos)],
        }
    )
    vectors = rng.normal(size=(len(rows), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    catalog = CatalogIndex.create(IndexConfig(kind="exact"), DIM, "m", "1")
    catalog.add_products(rows, vectors)
    return catalog, rows, vectors


def _brute_force(rows, vectors, query, prior, weight, k):
    """Every product's best photo, scored by cosine + weight x log prior, sorted."""
    cosine = pd.Series(vectors @ query, index=rows.index)
    best = (
        rows.assign(cosine=cosine)
        .groupby("product_id")
        .agg(cosine=("cosine", "max"), category=("category", "first"))
    )
    floor = min(prior.values())
    best["ranked"] = best["cosine"] + weight * best["category"].map(prior).fillna(floor)
    return best.sort_values("ranked", ascending=False).index[:k].tolist(), best["cosine"].max()


@pytest.mark.parametrize("weight", [0.0, 0.05, 0.5, 5.0])
def test_search_with_prior_is_exact_against_brute_force(weight):
    """Fetching, re-ranking and doubling the fetch finds exactly the brute-force top k, even
    when the prior is strong enough to reach far down the cosine ranking (weight 5)."""
    rng = np.random.default_rng(0)
    catalog, rows, vectors = _catalog(rng)
    for _ in range(5):
        query = rng.normal(size=DIM).astype(np.float32)
        query /= np.linalg.norm(query)
        prior = category_log_prior(rng.normal(scale=3.0, size=len(CATEGORIES)), CATEGORIES)
        hits, best = search_with_prior(catalog, query, 60, prior, weight)
        expected, expected_best = _brute_force(rows, vectors, query, prior, weight, 60)
        assert [h.product_id for h in hits] == expected
        assert best == pytest.approx(expected_best, abs=1e-5)
        # Hits keep their cosine score: the no-match threshold compares similarities.
        assert hits[0].score == pytest.approx(
            float((vectors @ query)[rows.product_id == hits[0].product_id].max()), abs=1e-5
        )


def test_a_category_the_head_does_not_know_gets_its_smallest_prior():
    rng = np.random.default_rng(1)
    catalog, rows, vectors = _catalog(rng, products=60)
    query = vectors[0]  # p0's own photo: cosine 1
    known = [c for c in CATEGORIES if c != rows.category[0]]
    prior = dict(zip(known, [0.0, -1.0, -2.0], strict=True))  # p0's category is unknown
    hits, _ = search_with_prior(catalog, query, 5, prior, weight=10.0)
    ranked, _ = _brute_force(rows, vectors, query, prior, 10.0, 5)
    assert [h.product_id for h in hits] == ranked
    assert hits[0].product_id != "p0", "an unknown category must not be favoured"


def test_an_empty_index_answers_nothing():
    catalog = CatalogIndex.create(IndexConfig(kind="exact"), DIM, "m", "1")
    assert search_with_prior(catalog, np.ones(DIM, np.float32), 5, {"bag": 0.0}, 0.1) == ([], None)


def test_prior_bias_is_the_weighted_log_softmax_of_each_gallery_label():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    bias = prior_bias(logits, np.array([0, 2, 2, 1]), weight=0.5)
    expected = 0.5 * torch.log_softmax(torch.tensor(logits), dim=1)[:, [0, 2, 2, 1]]
    np.testing.assert_allclose(bias, expected.numpy(), atol=1e-6)


def test_evaluate_ranks_as_the_served_index_does():
    """evaluate's dense scores (cosine + prior_bias) and the index's search_with_prior put the
    same products first: the numbers evaluate reports are the ranking search serves."""
    rng = np.random.default_rng(2)
    catalog, rows, vectors = _catalog(rng, products=200, photos=1)
    labels = rows["category"].map(CATEGORIES.index).to_numpy()
    queries = rng.normal(size=(8, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    logits = rng.normal(scale=2.0, size=(8, len(CATEGORIES)))
    dense = queries @ vectors.T + prior_bias(logits, labels, 0.3)
    for i, query in enumerate(queries):
        prior = category_log_prior(logits[i], CATEGORIES)
        hits, _ = search_with_prior(catalog, query, 10, prior, 0.3)
        expected = rows["product_id"].to_numpy()[np.argsort(-dense[i])[:10]]
        assert [h.product_id for h in hits] == expected.tolist()


def test_recall_counts_the_ranking_with_the_bias():
    """A query nearest to a look-alike of another category: cosine misses at rank 1, the head's
    prior brings its own category first; a weak prior leaves the cosine ranking alone."""
    gallery = torch.tensor([[1.0, 0.0], [0.95, 0.31]])  # label 1 (look-alike), label 0
    gallery_labels = torch.tensor([1, 0])
    query, query_labels = torch.tensor([[1.0, 0.05]]), torch.tensor([0])
    logits = np.array([[3.0, 0.0]])  # the head is sure: category 0
    plain = recall_at_k(query, query_labels, gallery, gallery_labels, ks=(1,))
    assert plain["recall@1"] == 0.0
    strong = torch.from_numpy(prior_bias(logits, gallery_labels.numpy(), 0.1))
    assert (
        recall_at_k(query, query_labels, gallery, gallery_labels, (1,), bias=strong)["recall@1"]
        == 1.0
    )
    weak = torch.from_numpy(prior_bias(logits, gallery_labels.numpy(), 0.001))
    assert (
        recall_at_k(query, query_labels, gallery, gallery_labels, (1,), bias=weak)["recall@1"]
        == 0.0
    )


def test_a_backend_that_answers_fewer_than_asked_ends_the_search():
    """Where the backend caps one search (Milvus's max_k), the fetch stops doubling at the cap
    and the prior re-ranks what the index could give, instead of asking forever."""
    rng = np.random.default_rng(3)
    catalog, rows, vectors = _catalog(rng, products=300, photos=1)
    catalog.index.max_k = 64  # an instance attribute shadows the class's limit
    query = vectors[5]
    prior = dict(zip(CATEGORIES, [0.0, -30.0, -30.0, -30.0], strict=True))  # bag only
    hits, best = search_with_prior(catalog, query, 10, prior, weight=1.0)
    assert len(hits) == 10 and best == pytest.approx(1.0, abs=1e-5)
    cosine_top64 = set(rows.product_id.to_numpy()[np.argsort(-(vectors @ query))[:64]])
    assert {h.product_id for h in hits} <= cosine_top64
    bags = [h for h in hits if h.category == "bag"]
    assert hits[: len(bags)] == bags, "within what the index returned, the prior ranks"
