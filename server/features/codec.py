"""Feature set definitions to and from JSON (how they are stored), via lookup tables."""

from __future__ import annotations

import json
from typing import Any

from llmopt.features.spec import (
    Clip,
    Cyclical,
    Feature,
    FeatureSet,
    FeatureType,
    Hash,
    Identity,
    Log1p,
    MinMax,
    OneHot,
    Standardize,
    Transform,
)

TRANSFORM_BY_KIND: dict[str, type] = {
    "identity": Identity,
    "log1p": Log1p,
    "standardize": Standardize,
    "minmax": MinMax,
    "clip": Clip,
    "one_hot": OneHot,
    "hash": Hash,
    "cyclical": Cyclical,
}
KIND_BY_TRANSFORM: dict[type, str] = {v: k for k, v in TRANSFORM_BY_KIND.items()}


def transform_to_dict(t: Transform) -> dict[str, Any]:
    params = t._asdict()
    if isinstance(t, OneHot):
        params["vocabulary"] = list(t.vocabulary)
    return {"kind": KIND_BY_TRANSFORM[type(t)], **params}


def transform_from_dict(d: dict[str, Any]) -> Transform:
    params = {k: v for k, v in d.items() if k != "kind"}
    if "vocabulary" in params:
        params["vocabulary"] = tuple(params["vocabulary"])
    return TRANSFORM_BY_KIND[d["kind"]](**params)  # type: ignore[no-any-return]


def set_to_json(fs: FeatureSet) -> str:
    return json.dumps(
        {
            "name": fs.name,
            "entity_key": fs.entity_key,
            "ttl_seconds": fs.ttl_seconds,
            "description": fs.description,
            "aggregates": list(fs.aggregates),
            "features": [
                {
                    "name": f.name,
                    "type": f.type.name,
                    "transform": transform_to_dict(f.transform),
                    "default": f.default,
                    "source": f.source,
                }
                for f in fs.features
            ],
        },
        sort_keys=True,
    )


def set_from_json(text: str, version: int, create_time: float) -> FeatureSet:
    d = json.loads(text)
    return FeatureSet(
        name=d["name"],
        entity_key=d["entity_key"],
        ttl_seconds=d["ttl_seconds"],
        description=d["description"],
        aggregates=tuple(d["aggregates"]),
        features=tuple(
            Feature(
                name=f["name"],
                type=FeatureType[f["type"]],
                transform=transform_from_dict(f["transform"]),
                default=f["default"],
                source=f["source"],
            )
            for f in d["features"]
        ),
        version=version,
        create_time=create_time,
    )
