"""Property-based fuzzing of the whole OpenAPI schema with schemathesis, against a real
server: no 5xx for any request, and every response matches the schema."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from api.app import create_app
from api.settings import Settings
from service_support import AUTH, ServerProcess, fresh_database_url

pytestmark = pytest.mark.service
# the schema the server will serve (building it needs no database)
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    process = ServerProcess(tmp, fresh_database_url(tmp)).start()
    yield process
    process.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation(case, server):
    # Schema-valid requests may still fail the service's own checks (a map with errors, a
    # state the robot cannot reach): a 422 by design, so "positive data acceptance" is off.
    # "Negative data rejection" is off too: every case gets the operator token (a case meant to
    # lack it then has it) and unknown query parameters are ignored, as HTTP APIs do; malformed
    # values of every field are refused with 422, tested in test_service_validation.py.
    case.call_and_validate(base_url=server.url, headers=AUTH,
                           excluded_checks=[positive_data_acceptance, negative_data_rejection])
