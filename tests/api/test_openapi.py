from __future__ import annotations


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
