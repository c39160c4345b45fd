"""The runtime choices a config may name, without importing torch.

`segls.config` imports these to check ``runtime.amp``; `segls.runtime.device` maps each to
its dtype (`AMP_DTYPES`).
"""

AMP_MODES = ("off", "fp16", "bf16")  # runtime.amp: float32, float16 + scaler, bfloat16
