"""ASGI entry point: `uvicorn service.main:app`."""

from service.app import asgi_app, create_app

fastapi_app = create_app()
app = asgi_app(fastapi_app)
