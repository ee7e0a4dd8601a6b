"""The /docs page must work on hosts without internet access."""


def test_docs_page_loads_local_assets(client):
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text
    assert "/docs-assets/swagger-ui-bundle.js" in page.text


def test_docs_assets_are_served(client):
    script = client.get("/docs-assets/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert len(script.content) > 100_000
