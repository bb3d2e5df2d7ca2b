"""The gateway: ``/api/predict/<service>`` forwarded to a service's ready instances."""
