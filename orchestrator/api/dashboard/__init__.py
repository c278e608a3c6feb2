"""The web dashboard: server-rendered pages over the fabric's own services.

``/`` shows hosts, VMs, pools, reservations, volumes, schedules and two charts
(drawn as inline SVG from the events table); the forms under ``/ui/...`` call
the Python services directly and come back to ``/`` with a flash message. Every
form carries a per-session CSRF token (the session is Flask's signed cookie).
With authentication on, ``/ui/login`` trades a user and password for a token
kept in the ``fabric_token`` cookie (HttpOnly, SameSite=Strict).

- ``blueprint``: the blueprint, its set-up and the services it reads;
- ``login``: signing in and out, the session's CSRF token, who is signed in;
- ``views``: the overview page and its sections;
- ``charts``: the inline SVG charts;
- ``forms``: the POST ``/ui/...`` actions;
- ``events``: the events page (``/ui/events``), the audit trail with filters.
- ``power``: VM stop, start, reboot, resize and the console page.
"""

from __future__ import annotations

from . import events, forms, login, power, views
from .blueprint import bp

__all__ = ["bp", "events", "forms", "login", "power", "views"]
