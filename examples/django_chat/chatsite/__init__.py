"""A small Django site with live chat rooms served by chanlite."""
