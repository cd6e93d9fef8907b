"""A module that fails while importing, for the error-message tests."""

raise RuntimeError("this module is broken on purpose")
