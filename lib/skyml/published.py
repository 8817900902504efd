"""The published numbers this repository compares with: ``data/published.yml``.

Each entry of ``published`` names the metric it stands next to (a key of
:data:`skyml.report.METRICS`), its value, its source (talk or paper, a
``references.bib`` key, and the public repository) and how its definition or
setting differs from this repository's. ``autosourceid_flux_bins`` is
AutoSourceID's purity/completeness table; ``not_published`` lists analyses
without a comparable published number.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from . import paths

FILE = paths.DATA / "published.yml"
COMPARABLE = ("same", "other")


@dataclass(frozen=True)
class Published:
    metric: str
    value: float | tuple[float, float]
    text: str
    source: str
    cite: tuple[str, ...]
    citation: str  # the source's ``short`` name, e.g. "Panes et al. 2021, AutoSourceID"
    where: str
    definition: str
    comparable: str
    differs: str = ""

    @property
    def same_definition(self) -> bool:
        return self.comparable == "same"


def _value(raw) -> float | tuple[float, float]:
    if isinstance(raw, list):
        low, high = (float(v) for v in raw)
        return low, high
    return float(raw)


def _text(value) -> str:
    if isinstance(value, tuple):
        return f"{value[0]:g}–{value[1]:g}"
    return f"{value:g}"


@lru_cache(maxsize=None)
def _load(path: Path) -> dict:
    data = yaml.safe_load(Path(path).read_text())
    sources = data["sources"]
    entries = {}
    for raw in data["published"]:
        name = raw["source"]
        if name not in sources:
            raise ValueError(f"{path}: {raw['metric']}: unknown source {name!r}")
        if raw["comparable"] not in COMPARABLE:
            raise ValueError(f"{path}: {raw['metric']}: comparable must be one of {COMPARABLE}")
        if raw["metric"] in entries:
            raise ValueError(f"{path}: {raw['metric']} is listed twice")
        value = _value(raw["value"])
        source = sources[name]
        entries[raw["metric"]] = Published(
            metric=raw["metric"], value=value, text=str(raw.get("text") or _text(value)), source=name,
            cite=tuple(source["cite"]), citation=source["short"], where=raw["where"],
            definition=" ".join(raw["definition"].split()), comparable=raw["comparable"],
            differs=" ".join(raw.get("differs", "").split()),
        )
    return {"sources": sources, "entries": entries, "bins": data["autosourceid_flux_bins"],
            "not_published": data.get("not_published", [])}


def load(path: Path = FILE) -> dict:
    """``{"sources", "entries" (metric -> Published), "bins", "not_published"}``."""
    return _load(Path(path))


def for_metric(metric: str, path: Path = FILE) -> Published | None:
    return load(path)["entries"].get(metric)


def sources(path: Path = FILE) -> dict:
    return load(path)["sources"]


def autosourceid_bins(path: Path = FILE) -> dict[str, np.ndarray]:
    """AutoSourceID's table as float arrays (NaN where a value is not given)."""
    bins = load(path)["bins"]
    return {key: np.array([np.nan if v is None else float(v) for v in values])
            for key, values in bins.items() if isinstance(values, list)}


def cite_keys(path: Path = FILE) -> set[str]:
    """Every references.bib key that the file cites."""
    return {key for source in sources(path).values() for key in source["cite"]}
