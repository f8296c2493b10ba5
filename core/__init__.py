"""Thresher's shared vocabulary: records, step protocols, errors, tokens, models and backends.

Importing ``core`` imports neither torch nor transformers; they load on first use.
"""

from thresher.core.errors import (
    BackendError,
    BackendResponseError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
    DependencyMissingError,
    InputError,
    ModelUnavailableError,
    NotFoundError,
    ThresherError,
)
from thresher.core.record import (
    Message,
    Record,
    content_texts,
    is_text_part,
    message_text,
    validate_messages,
)
from thresher.core.steps import Batch, Filter, Scorer, Selector, Step, apply_scorer

__all__ = [
    "BackendError",
    "BackendResponseError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "Batch",
    "ConfigError",
    "DependencyMissingError",
    "Filter",
    "InputError",
    "Message",
    "ModelUnavailableError",
    "NotFoundError",
    "Record",
    "Scorer",
    "Selector",
    "Step",
    "ThresherError",
    "apply_scorer",
    "content_texts",
    "is_text_part",
    "message_text",
    "validate_messages",
]
