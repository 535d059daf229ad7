"""ASGI entry point: `uvicorn service.main:app`."""

from service.core.filemodes import restrict_umask

restrict_umask()  # before anything is created: the database, its WAL and keys are private (0600)

from service.app import asgi_app, create_app  # noqa: E402

fastapi_app = create_app()
app = asgi_app(fastapi_app)
