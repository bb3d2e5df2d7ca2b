"""Online prediction services: their records, the reconciler, autoscaling, staging."""
