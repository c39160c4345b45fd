"""The Segformer memory benchmark on a tiny case: every variant in this process, the table.

The training step needs transformers: those cases skip without it (as in
tests/test_integrations_examples.py, and fail instead with SEGLS_REQUIRE_INTEGRATIONS=1).
"""

import pytest
from test_integrations_examples import require

from benchmarks import segformer

SPEC = {"batch": 1, "classes": 5, "size": 32, "model": "tiny", "threads": 1}


@pytest.mark.parametrize("what", ["loss", "step"])
@pytest.mark.parametrize("variant", list(segformer.LOSSES))
def test_every_variant_measures_a_peak(what, variant):
    if what == "step":
        require("transformers")
    result = segformer.run_worker({**SPEC, "what": what, "variant": variant})
    assert result["peak_mib"] is None or result["peak_mib"] >= 0


def test_table_gives_each_peak_against_segformers_own_loss():
    own, fused = segformer.LOSSES
    results = [
        {"what": "loss", "variant": own, "peak_mib": 200.0},
        {"what": "loss", "variant": fused, "peak_mib": 20.0},
        {"what": "step", "variant": own, "peak_mib": 1000.0},
        {"what": "step", "variant": fused, "peak_mib": 800.0},
    ]
    table = segformer.format_table(results)
    assert f"| loss | {fused} | 20.0 | 0.100x |" in table
    assert f"| step | {fused} | 800.0 | 0.800x |" in table
