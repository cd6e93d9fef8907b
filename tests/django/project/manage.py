#!/usr/bin/env python
"""The test site's manage.py (tests run it in subprocesses)."""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cl_testsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
