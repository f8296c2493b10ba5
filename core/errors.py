"""Thresher's exceptions: one hierarchy, every message names the bad value and the fix.

::

    ThresherError                      base of everything Thresher raises on purpose
    ├── InputError (ValueError)        bad input from a caller: a field, a file line, a flag
    │   └── ConfigError                a bad setting or recipe key
    ├── NotFoundError (LookupError)    a named thing (pool, model, job) that does not exist
    ├── ModelUnavailableError          a model package is missing or a model file cannot be
    │                                  loaded or converted; the message carries the pip line
    ├── DependencyMissingError         (ImportError) an optional extra is not installed
    └── BackendError                   an LLM backend failed
        ├── BackendUnavailableError    connection refused, DNS, killed mid-stream
        ├── BackendTimeoutError        no answer within the timeout
        ├── BackendResponseError       the backend answered with an HTTP error (has status_code)
        └── BackendProtocolError       the backend answered, not in the OpenAI protocol (a body
                                       that is not JSON, a stream answered without events)

``InputError.field`` names the offending field so that the API can fill the OpenAI error body's
``param`` and the CLI can print a one-line message.
"""

from __future__ import annotations


class ThresherError(Exception):
    """Base class of every error Thresher raises on purpose."""


class InputError(ThresherError, ValueError):
    """Bad input from a caller; ``field`` names what to fix (``None`` if no single field)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConfigError(InputError):
    """A setting, recipe key or option value that cannot be used."""


class NotFoundError(ThresherError, LookupError):
    """A named resource (pool, model, job, file) does not exist."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelUnavailableError(ThresherError):
    """A model cannot be had: its package is missing or its files cannot be loaded."""

    def __init__(self, message: str, *, package: str | None = None, install: str | None = None):
        if install:
            message = f"{message} Install it with: {install}"
        super().__init__(message)
        self.package = package
        self.install = install


class DependencyMissingError(ThresherError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"The optional dependency '{module}' is not installed. "
            f"Install it with: pip install 'thresher[{extra}]'"
        )
        self.module = module
        self.extra = extra


class BackendError(ThresherError):
    """An LLM backend failed to answer. ``reached`` is False only when the request certainly
    never arrived (no connection): the one case where a generation is safe to send again."""

    def __init__(self, message: str, *, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


class BackendUnavailableError(BackendError):
    """The backend could not be reached, or the connection broke mid-answer."""


class BackendTimeoutError(BackendError):
    """The backend did not answer within its timeout."""


class BackendResponseError(BackendError):
    """The backend answered with an HTTP error status."""

    def __init__(self, message: str, *, status_code: int, body: object = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class BackendProtocolError(BackendError):
    """The backend answered, but not in the OpenAI wire protocol. Never retried: the request
    reached a server that ran it."""


def require(module: str, extra: str):  # type: ignore[no-untyped-def]
    """Import an optional module or raise :class:`DependencyMissingError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyMissingError(module, extra) from exc
