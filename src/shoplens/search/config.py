"""Which vector index to build, as one plain dataclass (the backends and
:mod:`shoplens.search.factory` build from it; it imports neither, so nothing cycles).

Kept free of Hydra so the index stage, the service and the benchmark can build an index from
keyword arguments. Defaults were tuned with ``benchmarks/search.py`` on 1M clustered 256-d
vectors (single-query top-10, one thread, against exact's 40-50 ms):

* ivf, nlist=2000 (auto) nprobe=32: 1.0 ms, hit@1 1.000, recall@10 1.000, built in 28 s;
* hnsw, M=32 efC=200 ef=128: 0.7 ms, hit@1 1.000, recall@10 1.000, built in 28 min on two
  busy cores (efC=80 built in 7 min but reached only hit@1 0.965, 0.975 even at ef=256);
* ivfpq, pq 32x8, refine_k=16: 0.6 ms, hit@1 1.000, recall@10 0.960 (refine_k=4: ~0.80).

``kind="auto"`` (the default) picks by catalog size from the same benchmark: exact search
costs ~0.3 ms at 10k and ~5 ms at 100k per query, small beside the ~13 ms a whole
``/search`` request takes (benchmarks/search_http.py), and is never wrong; at 1M it costs ~50 ms, where IVF answers in ~1 ms with
hit@1 1.000. So exact up to ``auto_exact_max`` photos, IVF above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

FAISS_KINDS: tuple[str, ...] = ("exact", "hnsw", "ivf", "ivfpq")
KINDS: tuple[str, ...] = (*FAISS_KINDS, "milvus", "auto")


@dataclass
class IndexConfig:
    kind: str = "auto"  # exact | hnsw | ivf | ivfpq (FAISS, in process) | milvus | auto
    auto_exact_max: int = 100_000  # auto: exact up to this many photos, ivf above
    # hnsw: graph degree, build-time and search-time beam widths (search uses max(ef_search, k)).
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    # ivf / ivfpq: inverted lists (null: ~2*sqrt(N) of the vectors given at build time) and
    # lists scanned per query; k-means trains on at most train_per_list vectors per list.
    nlist: int | None = None
    nprobe: int = 32
    train_per_list: int = 64
    # ivfpq: sub-quantizers (must divide dim) and bits each; refine_k * k PQ candidates are
    # re-ranked with exact inner products (IndexRefineFlat's k_factor).
    pq_m: int = 32
    pq_nbits: int = 8
    refine_k: int = 16
    # hnsw / ivfpq cannot delete in FAISS: removed ids become tombstones (filtered at search
    # time) and the index is rebuilt from its own vectors past this fraction of tombstones.
    max_tombstone_fraction: float = 0.3
    # milvus: a local Milvus Lite file (*.db) or a server URI (http://host:19530); token from
    # $MILVUS_TOKEN, never stored. Index FLAT (exact) or HNSW (hnsw_m / ef_* above).
    milvus_uri: str = "milvus.db"
    milvus_collection: str = "shoplens"
    milvus_index: str = "HNSW"
    milvus_metric: str = "COSINE"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown index kind {self.kind!r}; choose one of {KINDS}")
        if self.milvus_index not in ("FLAT", "HNSW"):
            raise ValueError(f"milvus_index must be FLAT or HNSW, got {self.milvus_index!r}")
        if self.milvus_metric not in ("COSINE", "IP"):
            raise ValueError(f"milvus_metric must be COSINE or IP, got {self.milvus_metric!r}")
        if not 0 < self.max_tombstone_fraction <= 1:
            raise ValueError("max_tombstone_fraction must be in (0, 1]")

    def auto_nlist(self, n_train: int) -> int:
        """The list count for ``n_train`` vectors: ~2*sqrt(N), at least 39 vectors per list.

        4-16*sqrt(N) is the textbook range, but k-means cost grows with nlist and this runs on
        a couple of CPU cores; 2*sqrt(N) met the recall target in the benchmark.
        """
        if self.nlist is not None:
            return self.nlist
        return max(1, min(int(2 * math.sqrt(n_train)), n_train // 39))

    def for_size(self, n_photos: int) -> IndexConfig:
        """This config with ``auto`` resolved for a catalog of ``n_photos``."""
        if self.kind != "auto":
            return self
        return replace(self, kind="exact" if n_photos <= self.auto_exact_max else "ivf")
