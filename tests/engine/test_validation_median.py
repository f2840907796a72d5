"""Per-frame method metrics: medians in the validation summary."""

import math

import torch

from sahmr.engine.methods import has_per_frame_metrics
from sahmr.engine.validation import ValidationResult


def test_method_summary_reports_medians_of_per_frame_values():
    res = ValidationResult()
    res.method_metrics.add("root_error_mm", 400.0, 4.0)
    res.method_per_frame["root_error_mm"] = [10.0, 400.0, 30.0, math.nan, 20.0]
    summary = res.method_summary()
    assert summary["root_error_mm"] == 100.0  # the count-weighted mean stays as it was
    assert summary["root_error_mm_median"] == 25.0  # median of 10, 20, 30, 400 (NaN dropped)
    assert res.scalars()["root_error_mm_median"] == 25.0
    res.method_per_frame["empty"] = [math.nan]
    assert math.isnan(res.method_summary()["empty_median"])


def test_per_frame_hook_is_duck_typed():
    class WithHook(torch.nn.Module):
        def per_frame_metrics(self, output, targets):
            return {"x": torch.zeros(2)}

    assert has_per_frame_metrics(WithHook())
    assert not has_per_frame_metrics(torch.nn.Linear(1, 1))
