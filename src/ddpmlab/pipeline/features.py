"""Sample quality from a validated params.yaml: the Inception extractor and the metric settings.

Shared by the evaluate and sweep stages and the common-reference tool, so all three measure alike.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ddpmlab.core.fid import InceptionFeatures
from ddpmlab.core.metrics import Extractor, MetricSpec
from ddpmlab.pipeline.schema import Params


def metric_spec(P: Params) -> MetricSpec:
    """evaluate.{kid_subsets, kid_subset_size, prc_k} and the seed."""
    ev = P.evaluate
    return MetricSpec(ev.kid_subsets, ev.kid_subset_size, ev.prc_k, P.seed)


def inception_extractor(P: Params, weights: Path, device, desc: str = "features") -> Extractor:
    """uint8 [N, H, W, C] -> Inception pool features [N, 2048], in batches of evaluate.batch_size."""
    return partial(InceptionFeatures(weights, device), batch=P.evaluate.batch_size, desc=desc)
