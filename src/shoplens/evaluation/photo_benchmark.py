"""Search quality on the shopper-photo benchmark, per model variant and scale bucket.

Every variant answers the benchmark's JPEG bytes through :class:`~shoplens.query.QueryPipeline`,
the code ``POST /search`` runs, against the clean test split embedded by the same pipeline:

* ``baseline_frame``: the untuned backbone on the whole photo;
* ``finetuned_frame``: the fine-tuned embedder on the whole photo (search without localization);
* ``pipeline``: localize -> crop -> embed, as registered (needs a localizer);
* ``oracle_box`` / ``oracle_mask``: the ground-truth box (and mask) instead of the localizer:
  what perfect localization would give, so the gap says what the localizer costs.

Metrics: ``category@1`` / ``category@5`` (a result of the photographed product's category in
the top K) and ``product@1`` (the photographed product itself first; it is in the gallery).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torchmetrics.detection import MeanAveragePrecision
from torchmetrics.functional.classification import binary_jaccard_index
from tqdm import tqdm

from shoplens.evaluation.retrieval import Prior, recall_at_k
from shoplens.evaluation.shopper_photos import PRODUCT, read_mask, read_photo
from shoplens.query import Detection, QueryPipeline, QueryResult
from shoplens.query.localize import Letterbox

BATCH = 32  # photos per query_batch call


@dataclass(frozen=True)
class Variant:
    name: str
    pipeline: QueryPipeline
    mode: str = "frame"  # frame | localize | oracle_box | oracle_mask


@dataclass
class Answers:
    """One variant's query embeddings, in benchmark order, and what it did per photo."""

    embeddings: np.ndarray
    results: list[QueryResult | None]  # None for oracle variants
    logits: np.ndarray | None = None  # the category head's, per row (None: no head)

    def closer_of_whole_and_crop(self, gallery: np.ndarray) -> Answers:
        """Where the pipeline embedded the whole photo too (QueryResult.whole_embedding),
        search with whichever finds the closer gallery match: what the service does."""
        chosen = self.embeddings.copy()
        logits = None if self.logits is None else self.logits.copy()
        for i, result in enumerate(self.results):
            if result is not None and result.whole_embedding is not None:
                whole = result.whole_embedding
                if float((gallery @ whole).max()) > float((gallery @ chosen[i]).max()):
                    chosen[i] = whole
                    if logits is not None and result.whole_logits is not None:
                        logits[i] = result.whole_logits
        return Answers(chosen, self.results, logits)


def _oracle(pipeline: QueryPipeline, photo: bytes, mask: np.ndarray, use_mask: bool) -> np.ndarray:
    """The crop the pipeline would make had the localizer found exactly the true product."""
    image = pipeline.validate(photo)
    product = mask == PRODUCT
    ys, xs = np.nonzero(product)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    side = max(image.width, image.height)
    frame = Letterbox(image.width, image.height, side)
    x0, y0, x1, y1 = frame.inner
    prob = np.zeros((side, side), np.float32)
    prob[y0:y1, x0:x1] = product
    detection = Detection(box, 1.0, float(product.mean()), 1)
    labels = (prob > 0).astype(np.int32) if use_mask else None
    return pipeline.crop(image, detection, labels, prob if use_mask else None)


def answer(variant: Variant, table: pd.DataFrame, photo_dir: Path) -> Answers:
    names = list(table["photo"])
    if variant.mode.startswith("oracle"):
        crops = [
            _oracle(
                variant.pipeline,
                read_photo(photo_dir, n),
                read_mask(photo_dir, n),
                use_mask=variant.mode == "oracle_mask",
            )
            for n in tqdm(names, desc=f"{variant.name} crops", unit="photo", mininterval=2.0)
        ]
        embedded = variant.pipeline.embed_squares(np.stack(crops))
        return Answers(embedded.embeddings, [None] * len(names), embedded.logits)
    results: list[QueryResult] = []
    localize = variant.mode == "localize"
    for start in tqdm(
        range(0, len(names), BATCH), desc=variant.name, unit="batch", mininterval=2.0
    ):
        photos = [read_photo(photo_dir, n) for n in names[start : start + BATCH]]
        results += variant.pipeline.query_batch(photos, localize=localize)
    logits = None
    if results and all(r.logits is not None for r in results):
        logits = np.stack([r.logits[0] for r in results])
    return Answers(np.stack([r.embeddings[0] for r in results]), list(results), logits)


def search_metrics(
    queries: np.ndarray,
    gallery: np.ndarray,
    table: pd.DataFrame,
    gallery_categories: Sequence[str],
    gallery_products: Sequence[str],
    prior: Prior | None = None,
    query_logits: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """``{"all" | bucket: {"category@1", "category@5", "product@1", "photos"}}``, ranked as
    search ranks: by cosine, plus the category prior where ``prior`` and ``query_logits``
    are given."""
    categories = {c: i for i, c in enumerate(sorted(set(gallery_categories)))}
    products = {p: i for i, p in enumerate(dict.fromkeys(gallery_products))}
    g_cat = torch.tensor([categories[c] for c in gallery_categories])
    g_prod = torch.tensor([products[p] for p in gallery_products])
    q_cat = torch.tensor([categories.get(c, -1) for c in table["category"]])
    q_prod = torch.tensor([products.get(str(p), -1) for p in table["product_id"]])
    q, g = torch.from_numpy(np.asarray(queries)), torch.from_numpy(np.asarray(gallery))
    bias = None if prior is None else prior.bias(query_logits)
    out = {}
    for bucket in ["all", *dict.fromkeys(table["bucket"])]:
        rows = torch.ones(len(table), dtype=torch.bool)
        if bucket != "all":
            rows = torch.from_numpy((table["bucket"] == bucket).to_numpy())
        b = None if bias is None else bias[rows]
        cat = recall_at_k(q[rows], q_cat[rows], g, g_cat, ks=(1, 5), bias=b)
        prod = recall_at_k(q[rows], q_prod[rows], g, g_prod, ks=(1,), bias=b)
        out[bucket] = {
            "category@1": cat["recall@1"],
            "category@5": cat["recall@5"],
            "product@1": prod["recall@1"],
            "photos": int(rows.sum()),
        }
    return out


def _boxes(table: pd.DataFrame, i: int) -> list[tuple[int, int, int, int]]:
    row = table.iloc[i]
    boxes = [(int(row.x0), int(row.y0), int(row.x1), int(row.y1))]
    distractor = getattr(row, "distractor_box", None)  # small photos have none
    if distractor is not None and len(distractor):
        boxes.append(tuple(int(v) for v in distractor))
    return boxes


def localization_metrics(
    results: Sequence[QueryResult], table: pd.DataFrame, photo_dir: Path, input_size: int
) -> dict[str, float]:
    """Box AP@0.5 (torchmetrics, every product in the photo, distractors included), mean mask
    IoU per photo at photo resolution (the mask the pipeline ends with, :func:`photo_mask`),
    and how often the product searched was the right one. Where it was not, two reasons are
    told apart: ``product_detected@0.5``, the photographed product among the detections at
    all (a miss the choice of product cannot repair), and ``searched_distractor``, of the
    photos with a distractor the share where the distractor was searched instead."""
    ap = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5])
    ious, right, found, detected, distracted, with_distractor = [], 0, 0, 0, 0, 0
    for i, result in enumerate(results):
        truth = _boxes(table, i)
        predicted = [d.box for d in result.detections]
        ap.update(
            [
                {
                    "boxes": torch.tensor(predicted, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(
                        [d.score for d in result.detections], dtype=torch.float32
                    ),
                    "labels": torch.zeros(len(predicted), dtype=torch.long),
                }
            ],
            [
                {
                    "boxes": torch.tensor(truth, dtype=torch.float32),
                    "labels": torch.zeros(len(truth), dtype=torch.long),
                }
            ],
        )
        mask = read_mask(photo_dir, table.iloc[i]["photo"]) > 0
        ious.append(float(binary_jaccard_index(
            torch.from_numpy(photo_mask(result, input_size)), torch.from_numpy(mask)
        )))  # fmt: skip
        detected += any(_iou(box, truth[0]) >= 0.5 for box in predicted)
        with_distractor += len(truth) > 1
        if result.localized:
            found += 1
            searched = predicted[result.searched[0]]
            right += _iou(searched, truth[0]) >= 0.5
            distracted += len(truth) > 1 and _iou(searched, truth[1]) >= 0.5
    out = {
        "box_ap@0.5": float(ap.compute()["map"]),
        "mask_iou": float(np.mean(ious)),
        "product_found": found / max(1, len(results)),
        "searched_right_product": right / max(1, len(results)),
        "product_detected@0.5": detected / max(1, len(results)),
    }
    if with_distractor:  # the small-photo benchmark has none
        out["searched_distractor"] = distracted / with_distractor
    return out


def photo_mask(result: QueryResult, side: int, closer_looks: bool = True) -> np.ndarray:
    """The pipeline's product mask in photo pixels: the first pass's probability resampled
    from the localizer's square, with each region it looked at again (refined around a small
    product, or the tile it was found in) replaced by that closer look's probability."""
    prob = result.product_mask if result.product_mask is not None else np.zeros((side, side))
    photo = _resample(prob, (0, 0, result.width, result.height))
    for box, look in result.closer_looks if closer_looks else []:
        x0, y0, x1, y1 = box
        photo[y0:y1, x0:x1] = _resample(look, box)
    return photo >= result.threshold


def _resample(prob: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A probability map over a region letterboxed to ``prob``'s side -> the region's pixels."""
    from PIL import Image

    width, height = box[2] - box[0], box[3] - box[1]
    frame = Letterbox(width, height, prob.shape[0])
    return np.array(
        Image.fromarray(prob.astype(np.float32), mode="F").resize(
            (width, height), Image.Resampling.BILINEAR, box=frame.inner
        )
    )


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def prior_of(pipeline: QueryPipeline, gallery_labels: np.ndarray | None) -> Prior | None:
    """The category prior ``pipeline``'s spec ranks search with (None: cosine only)."""
    weight = pipeline.spec.category_prior
    return None if gallery_labels is None or weight <= 0 else Prior(weight, gallery_labels)


def run_benchmark(
    variants: Sequence[Variant],
    table: pd.DataFrame,
    photo_dir: Path,
    gallery: Callable[[QueryPipeline], np.ndarray],
    gallery_categories: Sequence[str],
    gallery_products: Sequence[str],
    gallery_labels: np.ndarray | None = None,
) -> tuple[dict[str, dict], dict[str, Answers]]:
    """Metrics per variant (and localization metrics where it localized), plus the answers.
    ``gallery_labels`` (the head's class order): rank with each variant's category prior."""
    metrics, answers, galleries = {}, {}, {}
    for variant in variants:
        key = id(variant.pipeline.embedder)
        if key not in galleries:
            galleries[key] = gallery(variant.pipeline)
        found = answer(variant, table, photo_dir).closer_of_whole_and_crop(galleries[key])
        answers[variant.name] = found
        metrics[variant.name] = search_metrics(
            found.embeddings, galleries[key], table, gallery_categories, gallery_products,
            prior_of(variant.pipeline, gallery_labels), found.logits,
        )  # fmt: skip
        if variant.mode == "localize":
            side = variant.pipeline.spec.localizer.input_size
            metrics[variant.name]["localization"] = localization_metrics(
                found.results, table, photo_dir, side
            )
    return metrics, answers
