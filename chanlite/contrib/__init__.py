"""Integrations with other frameworks; each subpackage imports its framework lazily."""
