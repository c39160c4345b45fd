"""The loss settings a config may name, without importing torch.

`segls.config` imports these for ``loss.backend`` and the default of ``loss.lb_smooth``;
`segls.losses.checks` holds the loss's own argument checks.
"""

BACKENDS = ("auto", "torch", "triton")
DEFAULT_LB_SMOOTH = 0.1
