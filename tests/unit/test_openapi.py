"""The OpenAPI description made from an app's routes (cumulo/common/openapi.py)."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import Response
from starlette.routing import Mount, Route

from cumulo.common import openapi
from cumulo.common.service_client import url_path


class Widget(BaseModel):
    name: str
    size: int = 1


@openapi.describes(
    body=openapi.wrapped("thing", ("name", "size"), required=("name",)), resource="thing"
)
async def create_thing(_request) -> Response:
    return Response()


@openapi.describes(statuses={501: "Not here."}, query=("verbose",))
async def show_thing(_request) -> Response:
    return Response()


@openapi.describes(body=Widget)
async def make_widget(_request) -> Response:
    return Response()


async def plain(_request) -> Response:
    return Response()


ROUTES = [
    Route("/v1/things", create_thing, methods=["POST"]),
    Route("/v1/things", plain, methods=["GET"]),
    Route("/v1/things/{thing_id}", show_thing, methods=["GET"]),
    Route("/v1/things/{thing_id}", plain, methods=["DELETE"]),
    Route("/v1/files/{path:path}", plain, methods=["PUT"]),
    Mount("/v2", routes=[Route("/widgets", make_widget, methods=["POST"])]),
]


def test_every_route_and_method_is_described_with_its_path_parameters():
    doc = openapi.document(ROUTES, "things", "compute")
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/v1/things",
        "/v1/things/{thing_id}",
        "/v1/files/{path}",
        "/v2/widgets",
    }
    # Starlette answers HEAD wherever it answers GET.
    assert set(doc["paths"]["/v1/things/{thing_id}"]) == {"get", "head", "delete"}
    show = doc["paths"]["/v1/things/{thing_id}"]["get"]
    assert {(p["name"], p["in"], p["required"]) for p in show["parameters"]} == {
        ("thing_id", "path", True),
        ("verbose", "query", False),
    }
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def test_bodies_come_from_the_declaration_or_the_pydantic_model():
    doc = openapi.document(ROUTES, "things", "compute")
    create = doc["paths"]["/v1/things"]["post"]["requestBody"]["content"]["application/json"]
    inner = create["schema"]["properties"]["thing"]
    assert inner["required"] == ["name"] and set(inner["properties"]) == {"name", "size"}
    widget = doc["paths"]["/v2/widgets"]["post"]["requestBody"]["content"]["application/json"]
    assert widget["schema"] == {"$ref": "#/components/schemas/Widget"}
    assert doc["components"]["schemas"]["Widget"]["required"] == ["name"]
    # Undeclared: any JSON, so that fuzzing still sends bodies of every shape.
    assert doc["paths"]["/v1/files/{path}"]["put"]["requestBody"]["content"] == {
        "application/json": {"schema": {}}
    }


def test_a_create_links_to_what_it_made_and_errors_are_in_the_dialect():
    doc = openapi.document(ROUTES, "things", "compute")
    answers = doc["paths"]["/v1/things"]["post"]["responses"]
    assert answers["2XX"]["links"]["get_thing"] == {
        "operationId": "get_v1_things_by_thing_id",
        "parameters": {"thing_id": "$response.body#/thing/id"},
    }
    assert "delete_thing" in answers["2XX"]["links"]
    error = answers["4XX"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/compute_error"}
    assert doc["components"]["schemas"]["compute_error"]["maxProperties"] == 1
    # A 5xx only where the handler says it answers it on purpose.
    assert "501" in doc["paths"]["/v1/things/{thing_id}"]["get"]["responses"]
    assert "501" not in answers
    swift = openapi.document(ROUTES, "object-store", "object-store")
    errors = swift["paths"]["/v1/things"]["get"]["responses"]["4XX"]["content"]
    assert set(errors) == {"text/html", "text/plain"}


def test_url_path_keeps_a_typed_id_one_segment():
    assert url_path("/v2/images/{}", "abc") == "/v2/images/abc"
    assert url_path("/v2/images/{}/file", "../x?y=1") == "/v2/images/..%2Fx%3Fy%3D1/file"
    assert url_path("/v2/images/{}", "\x0b\u00e9") == "/v2/images/%0B%C3%A9"
