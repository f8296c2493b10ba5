"""In-context demonstrations: a persisted pool, retrievers, orderers, assembly under a budget.

Importing ``prompting`` loads neither faiss nor torch; they load when a pool is built or a
scorer is used.

Typical use::

    pool = Pool(provider.embedder()).fit(records)
    result = get_retriever("knn").fit(pool).retrieve("book a table for two", k=4)
    result = get_orderer("similarity").order(result)
    prompt = assemble(result.query, result, counter=provider.token_counter("gpt-4o"),
                      budget_tokens=512)
"""

from thresher.prompting.assembly import TEMPLATES, AssembledPrompt, Template, assemble, get_template
from thresher.prompting.index import IndexConfig
from thresher.prompting.ordering import Orderer
from thresher.prompting.pipeline import Demonstrations, demonstrate
from thresher.prompting.pool import Pool, demonstration, record_label, record_output
from thresher.prompting.result import Demonstration, RetrievalResult
from thresher.prompting.retrievers import Retriever
from thresher.prompting.store import PoolStore, check_pool_name, read_demonstrations
from thresher.prompting.strategies import (
    ORDER_NAMES,
    ORDERERS,
    RETRIEVER_NAMES,
    RETRIEVERS,
    OrderName,
    RetrieverName,
    get_orderer,
    get_retriever,
)

__all__ = [
    "ORDERERS",
    "ORDER_NAMES",
    "RETRIEVERS",
    "RETRIEVER_NAMES",
    "TEMPLATES",
    "AssembledPrompt",
    "Demonstration",
    "Demonstrations",
    "IndexConfig",
    "OrderName",
    "Orderer",
    "Pool",
    "PoolStore",
    "RetrievalResult",
    "Retriever",
    "RetrieverName",
    "Template",
    "assemble",
    "check_pool_name",
    "demonstrate",
    "demonstration",
    "get_orderer",
    "get_retriever",
    "get_template",
    "read_demonstrations",
    "record_label",
    "record_output",
]
