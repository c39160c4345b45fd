"""The loss settings a config may name, without importing torch.

`segls.config` imports these for ``loss.backend`` and the default of ``loss.lb_smooth``;
the rules that decide which settings are valid are `segls.losses.rules` (also torch-free).
"""

BACKENDS = ("auto", "torch", "triton")
DEFAULT_LB_SMOOTH = 0.1
