"""``sas serve``: an OpenAI-compatible HTTP server that steers each request (needs the ``serve`` extra).

    from sas.serve import make_app
    app = make_app(model, vectors={"sentiment": vec}, vectors_dir="vectors/")   # then uvicorn.run(app)

See :mod:`sas.serve.app` for the endpoints and :mod:`sas.serve.schemas` for the request fields.
"""

__all__ = ["Limits", "make_app"]


def __getattr__(name: str):
    # lazy: `sas --help` imports sas.serve.cli, which must work without FastAPI installed
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module 'sas.serve' has no attribute {name!r}")
