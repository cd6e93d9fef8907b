"""A small Django site that the chanlite.contrib.django tests serve."""
