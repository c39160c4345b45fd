"""What a trained model produces: scores, pictures and files for people, an ONNX export.

`evaluation` scores a model over a validation loader (and draws sample panels), `pictures`
and `plots` draw images and charts, `files` writes masks under unique names, `predictor`
segments your own images into masks and overlays, `export` writes and checks an ONNX graph. How a model turns an image into logits is
`segls.models.inference`.
"""

from segls.predict.evaluation import build_criterion, evaluate, sample_panels

__all__ = ["build_criterion", "evaluate", "sample_panels"]
