"""The operator control plane over HTTP (FastAPI).

:func:`create_app` builds the app; areas add their routers through its
``routers`` argument (the spec's risk, emergency and config endpoints).
"""

from risklib.api._app import create_app

__all__ = ["create_app"]
