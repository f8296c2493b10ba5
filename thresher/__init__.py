"""Thresher keeps the grain and drops the chaff for large language models.

Three jobs, one package each: :mod:`thresher.selection` (offline data selection for training
sets), :mod:`thresher.prompting` (in-context demonstrations) and :mod:`thresher.compression`
(prompt compression); :mod:`thresher.api` is the service, the proxy and the ``thresher`` CLI,
and :mod:`thresher.core` the vocabulary they share. Importing this package loads none of them.

In this repository the five packages are top-level folders (``core/``, ``api/``, ...);
``pyproject.toml`` maps them under this one name, so an install puts nothing else at the top
level of ``site-packages``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("thresher")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
