"""Training: run a user's script as a job task, as PAI-TF ran it.

:mod:`liqi.training.launcher` is the process each task runs
(``python -m liqi.training.launcher [--tf1] script.py [args...]``): the script as ``python
script.py`` would run it, optionally on TensorFlow 1.x's API, tolerant of PAI's platform flags.
"""
