"""``sas serve``: an OpenAI-compatible HTTP server that steers each request (needs the ``serve`` extra).

    from sas.serve import make_app
    app = make_app(model, vectors={"sentiment": vec}, vectors_dir="vectors/")   # then uvicorn.run(app)

See :mod:`sas.serve.app` for the endpoints and :mod:`sas.serve.schemas` for the request fields.
"""

from .app import Limits, make_app

__all__ = ["Limits", "make_app"]
