"""CLI command modules; each is registered in :mod:`thresher.api.cli` and imports heavy parts
lazily."""
