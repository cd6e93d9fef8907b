"""Chat rooms and their messages."""
