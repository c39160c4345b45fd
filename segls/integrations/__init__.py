"""Thin adapters that put the segls loss into other codebases; each is imported on demand.

``segls.integrations.mmseg``: a loss for mmsegmentation 1.x configs (and a decode-head mixin
for its fused upsampling), registered when mmseg's ``custom_imports`` imports it.
"""
