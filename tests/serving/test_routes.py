"""The one route table: every route is dispatched and documented, and nothing else is."""

from __future__ import annotations

import pytest

from streamlearn.serving.app import App
from streamlearn.serving.openapi import document
from streamlearn.serving.routes import ROUTES, concrete
from streamlearn.serving.settings import ServerSettings
from tests.serving.test_http import N_CLS, N_IN, StaticSource


@pytest.mark.parametrize("role", ["learner", "replica"])
@pytest.mark.parametrize("token", [None, "s3cret"])
def test_every_route_is_dispatched_and_documented(role: str, token: str | None) -> None:
    settings = ServerSettings("m.v1", "mer", N_IN, N_CLS, max_request_bytes=100, max_rows=4, auth_token=token)
    app = App(StaticSource(None), settings, role=role)
    doc = document(settings, admin=app.admin_action)
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    for route in ROUTES:
        path = concrete(route, "m.v1", app.admin_action)
        if route.endpoint == "operator" and role == "replica":  # the learner's controls only
            assert app.route(route.method, path) == ("other", None, []) and path not in doc["paths"]
            continue
        op = doc["paths"][path][route.method.lower()]
        assert op["operationId"] == route.operation_id.replace("{admin}", app.admin_action)
        assert ("security" in op) == (route.auth and token is not None)
        assert ("requestBody" in op) == (route.request is not None)
        endpoint, handler, _ = app.route(route.method, path.replace("{model_version}", "7"))
        assert (endpoint, handler) == (route.endpoint, getattr(app, route.handler)), path
        assert app.needs_auth(endpoint) == (route.auth and token is not None)
        documented.remove((path, route.method))
    assert not documented, f"documented but not in the route table: {documented}"


def test_the_model_name_is_literal_and_other_names_are_not_routed() -> None:
    settings = ServerSettings("m.v1", "mer", N_IN, N_CLS, max_request_bytes=100, max_rows=4)
    app = App(StaticSource(None), settings, role="replica")
    assert app.route("POST", "/v2/models/m.v1/infer")[0] == "infer"
    assert app.route("POST", "/v2/models/mXv1/infer") == ("other", None, [])  # "." is no wildcard
    assert app.route("GET", "/v2/models/m.v1/infer") == ("other", None, ["POST"])
    assert app.route("POST", "/v2/admin/checkpoint") == ("other", None, [])  # the learner's action
