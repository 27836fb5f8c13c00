from __future__ import annotations

import re


def test_openapi_describes_every_served_api(client):
    doc = client.get("/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for path in ("/2/httpapi", "/batch", "/identify", "/groupidentify", "/api/2/export"):
        assert path in paths, path
    assert any(p.startswith("/api/2/dsar/requests") for p in paths)
    export = paths["/api/2/export"]["get"]
    assert {p["name"] for p in export["parameters"]} >= {"start", "end"}
    assert {"200", "400", "401", "404"} <= set(export["responses"])
    assert doc["components"]["securitySchemes"]["basicAuth"]["scheme"] == "basic"


def test_dsar_create_schema_bounds_are_the_servers(client, keys):
    """The documented amplitudeId bounds and the userId-or-amplitudeId rule are what the server
    enforces: a client validating against the document never sends what the server refuses."""
    doc = client.get("/openapi.json").json()
    create = doc["paths"]["/api/2/dsar/requests"]["post"]["requestBody"]["content"]
    body = next(iter(create.values()))["schema"]
    assert [rule["required"] for rule in body["anyOf"]] == [["userId"], ["amplitudeId"]]
    aid = body["properties"]["amplitudeId"]
    dates = {"startDate": "2024-01-01", "endDate": "2024-01-02"}

    def post(**fields: object) -> int:
        response = client.post("/api/2/dsar/requests", json=fields | dates, auth=keys.org_auth)
        return response.status_code

    assert post(amplitudeId=aid["minimum"]) == 202
    assert post(amplitudeId=aid["maximum"]) == 202
    assert post(amplitudeId=aid["minimum"] - 1) == 400
    assert post(amplitudeId=aid["maximum"] + 1) == 400
    # Strings the server accepts match the pattern (it used to refuse leading zeros, blanks and
    # 19 digits, which the server takes).
    for text in ["9" * 18, " 0042 ", "1000000000000000000", "7\n"]:
        assert re.search(aid["pattern"], text), text
        assert post(amplitudeId=text) == 202, text
    assert not re.search(aid["pattern"], "\u0664\u0662")
    assert post(amplitudeId="\u0664\u0662") == 400
    assert post() == 400
