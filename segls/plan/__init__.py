"""Bring your own data: a dataset fingerprint turned into a config by readable rules.

`plan_dataset` surveys and fingerprints a dataset (`segls.data.fingerprint`), applies the
rules (`segls.plan.rules` for the data, `segls.plan.recipe` for model, schedule and loss),
times the candidates on this machine (`segls.plan.timing`), and `write_plan` writes the
commented config, a Markdown report with PNGs and the fingerprint as JSON.
"""

from segls.plan.planner import Plan, PlanError, plan_dataset, resolve_device
from segls.plan.report import default_config_path, write_plan
from segls.plan.rules import Choice

__all__ = [
    "Choice",
    "Plan",
    "PlanError",
    "default_config_path",
    "plan_dataset",
    "resolve_device",
    "write_plan",
]
