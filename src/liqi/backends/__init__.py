"""Where processes run, behind two seams: training jobs (:mod:`liqi.backends.jobs`, the
``Backend``; :mod:`liqi.backends.local_jobs`, a detached supervisor per job) and service
instances (:mod:`liqi.backends.instances`, the ``InstanceBackend``;
:mod:`liqi.backends.local_instances`, a ``liqi serve`` process per instance)."""
