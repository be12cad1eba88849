"""bottomless-cli: a thin Click layer over bottomless_core."""
