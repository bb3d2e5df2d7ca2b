"""The control plane behind the CLI, the SDK and the console: `liqi server`.

By subsystem: ``db`` (engine, tables, migrations, secret box), ``identity`` (accounts,
signatures), ``storage`` (buckets, resources, datasets, models), ``jobs`` (catalog, runner,
staging), ``services`` (catalog, reconciler, stager, autoscaling), ``api`` (the ``/api/v1``
routes) and ``server`` (the app with the gateway beside the API, the process, the daemon)."""
