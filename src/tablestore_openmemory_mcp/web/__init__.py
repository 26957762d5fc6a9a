"""The memory browser: a web page served by the HTTP app at ``/``, built on the REST API.

:func:`~.routes.web_routes` gives the routes; :class:`~.session.CookieSession` is the middleware that lets the
page's login cookie stand in for the bearer token on ``/api/*``.
"""

from tablestore_openmemory_mcp.web.routes import web_routes
from tablestore_openmemory_mcp.web.session import CookieSession

__all__ = ["CookieSession", "web_routes"]
