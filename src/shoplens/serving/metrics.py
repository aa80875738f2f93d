"""``GET /metrics`` for Prometheus: request latency and counts per route, and the service's state.

prometheus-fastapi-instrumentator measures every request (``http_request_duration_seconds``
histograms and ``http_requests_total`` by route, method and status, so errors are the 4xx/5xx
series). What is ours is a collector read at scrape time from the live searcher: which model
answers, how large the index is, and how many catalog changes this process has journalled. Each
app gets its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator


class ServiceCollector(Collector):
    def __init__(self, searcher: Callable[[], object | None]):
        self._searcher = searcher

    def collect(self) -> Iterator:
        s = self._searcher()
        if s is None:  # before the lifespan has loaded the model
            return
        info = InfoMetricFamily("shoplens_model", "the registered model answering searches")
        info.add_metric([], {"name": str(s.model.name), "version": str(s.model.version)})
        yield info
        yield GaugeMetricFamily("shoplens_index_photos", "photos in the index", len(s.index))
        yield GaugeMetricFamily("shoplens_index_products", "products in the index",
                                s.index.n_products)  # fmt: skip
        yield CounterMetricFamily("shoplens_catalog_changes", "additions and removals journalled "
                                  "by this process", s.catalog.changes)  # fmt: skip


def instrument(app: FastAPI) -> None:
    registry = CollectorRegistry()
    Instrumentator(
        should_group_status_codes=False, excluded_handlers=["/metrics"], registry=registry
    ).instrument(app).expose(app, include_in_schema=False)
    registry.register(ServiceCollector(lambda: getattr(app.state, "searcher", None)))
