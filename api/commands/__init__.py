"""CLI command modules; each is registered in :mod:`api.cli` and imports heavy parts lazily."""
