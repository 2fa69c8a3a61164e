"""The core's HTTP API (aiohttp): back-office routes and the routes edge nodes use."""

from __future__ import annotations

from core.api import backoffice, edge

ROUTES = (*backoffice.routes, *edge.routes)
