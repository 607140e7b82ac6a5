"""Features: request contexts and stored entity data turned into dense vectors.

The API other parts of the server call (the composition root hands the ``FeatureService`` to
the bandit service and the predictor, typed as the Protocols of ``llmopt.ports``):

``FeatureService.vector(feature_set, context, entity_ids=()) -> FeatureVector``
    A float32 row (``.values``) with ``.slot_names``, ``.feature_set`` and ``.version``.
    ``feature_set`` ``""`` or ``"context"`` is the built-in 10-dim request context vector
    (DESIGN.md, bit-exact); any other name is a stored feature set, whose latest version is
    compiled once into a plan that ``llmopt.native.features`` executes. Stored features are read
    for the entity named by ``entity_ids`` (a sequence of one id, or a mapping entity key -> id),
    or, when none is given, by the request field named like the set's entity key (e.g.
    ``user_id``, or ``context.metadata[key]``); features with a ``context.*`` source come from
    the request. Missing values read the feature's default (numbers without one read 0; text
    without one sets no one-hot slot); expired values (TTL) count as missing. Raises NotFound
    for an unknown set and InvalidArgument for a bad context.

``FeatureService.vector_width(feature_set) -> int``
    The number of slots the latest version's vector has (10 for the built-in context).

``FeatureService.record_arm_outcome(arm_key, latency_ms, cost, quality, error, at=None)``
    Feeds the built-in ``arm_outcomes`` set (entity = arm key; features ``latency_ms``, ``cost``,
    ``quality`` (skipped when None) and ``error`` (1.0/0.0)), whose windowed aggregates
    (e.g. ``latency_ms_p95_5m``, ``error_mean_1h`` = the error rate) are readable through
    GetFeatures / ``FeatureService.read``. Cheap: the row is committed in the background.

Also: ``create_set``, ``get_set``, ``list_sets``, ``write``, ``read`` (behind the
``llmopt.v1.Features`` RPCs), and ``warm_up()`` / ``close()`` for the server's lifecycle.
"""

from llmopt.features.context import OutputLength, RequestContext
from llmopt.features.service import (
    ARM_OUTCOMES_SET,
    CONTEXT_SET,
    EntityFeatures,
    FeatureService,
    FeatureVector,
    StoredValue,
)

__all__ = [
    "ARM_OUTCOMES_SET",
    "CONTEXT_SET",
    "EntityFeatures",
    "FeatureService",
    "FeatureVector",
    "OutputLength",
    "RequestContext",
    "StoredValue",
]
