"""Reading a Prometheus scrape: one sample's value, by metric name and labels."""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self._samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sample's value (0 when there is none: a counter not incremented yet)."""
        wanted = dict(labels or {})
        found = [
            value
            for sample, have, value in self._samples
            if sample == name and all(have.get(k) == v for k, v in wanted.items())
        ]
        return float(sum(found))

    def has(self, name: str) -> bool:
        return any(sample == name for sample, _, _ in self._samples)


def scrape(url: str, *, headers: Mapping[str, str] | None = None) -> Scrape:
    response = httpx.get(url, headers=dict(headers or {}), timeout=10)
    response.raise_for_status()
    return Scrape(response.text)
