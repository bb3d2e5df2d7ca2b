"""The model server, ``liqi serve``: the data plane.

Loaders turn model versions into servables (SavedModel, ONNX, scikit-learn, Python
processors); the ModelManager swaps versions; the batch runner feeds them; one ASGI app
answers EAS, TF Serving REST and the Open Inference Protocol V2 on one port
(:mod:`liqi.serving.server` builds and runs it)."""
