"""WSGI entry of the test site (plain Django, no chanlite server)."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cl_testsite.settings")
application = get_wsgi_application()
