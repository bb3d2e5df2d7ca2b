"""Instances failing on a Ray resource group: the test of
tests/reliability/test_instance_faults.py that SIGKILLs one of two instances under load, run
unchanged against a control plane whose default group is the session's Ray head (each instance
a detached actor running ``liqi serve``): clients see no error, the instance comes back."""

from __future__ import annotations

import pytest

from tests.reliability.test_instance_faults import (  # noqa: F401  (the same test, on Ray)
    mnist_digits,
    mnist_service,
    report,
    test_a_sigkilled_instance_under_load_costs_no_client_a_request,
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.tf, pytest.mark.reliability]
