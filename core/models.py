"""ModelProvider: loads each model once, by (name, device, dtype), and hands out typed wrappers.

Nothing heavy happens at import; torch and transformers are imported on first use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thresher.core.catalog import (
    CLASSIFIER_WEIGHTS,
    DEFAULT_CLASSIFIER,
    canonical_name,
    causal_lm_path,
    embedder_path,
    token_classifier_folder,
)
from thresher.core.device import check_device_name, resolve_device
from thresher.core.embedding import Embedder
from thresher.core.errors import ConfigError, ModelUnavailableError
from thresher.core.precision import Choice, CpuProbe, choose_cpu_dtype, choose_threads, measure_cpu
from thresher.core.scoring import TokenScorer
from thresher.core.settings import DEFAULT_EMBEDDER, DEFAULT_SCORER, default_cache_dir
from thresher.core.token_classifier import TokenClassifier
from thresher.core.tokens import (
    HFTokenCounter,
    TiktokenCounter,
    TokenCounter,
    tiktoken_encoding_for,
)

log = logging.getLogger(__name__)
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Tokens per window of the embedded classifier: shorter windows cost less time at almost the same
# agreement with its teacher (compression/train/MODEL_CARD.md gives the figures by window).
EMBEDDED_WINDOW = 128


@dataclass(slots=True)
class CausalLM:
    """A loaded causal LM with its tokenizer, shared by the scorer and the local backend."""

    name: str
    path: Path
    model: Any
    tokenizer: Any
    device: str
    dtype: str


@dataclass
class LoadEvent:
    """What the provider loaded and how long it took (``thresher doctor`` shows these)."""

    kind: str
    name: str
    device: str
    seconds: float


@dataclass
class ModelProvider:
    """Loads models once and caches them by (kind, name, device, dtype). Thread-safe.

    ``dtype="auto"`` loads general models in float32 on the CPU (log-probs exact and repeatable)
    and in bf16 on CUDA; compression's models take the dtype :meth:`compression_precision`
    chooses for this machine. ``cpu_probe`` measures the CPU for that choice (once per process
    by default; a test passes the measurements of another CPU).
    """

    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "auto"
    dtype: str = "auto"
    torch_threads: int | None = None
    cpu_probe: Callable[[], CpuProbe] = field(default=measure_cpu, repr=False)
    _cache: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)
    _wrappers: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _threads: Choice | None = field(default=None, repr=False)
    _cpu_dtype: Choice | None = field(default=None, repr=False)
    events: list[LoadEvent] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.cache_dir = Path(self.cache_dir).expanduser()
        check_device_name(self.device)
        self._check_dtype(self.dtype)
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(
                f"torch_threads must be at least 1, got {self.torch_threads}.",
                field="torch_threads",
            )

    @classmethod
    def from_settings(cls, settings: Any) -> ModelProvider:
        return cls(
            cache_dir=settings.cache_dir,
            device=settings.device,
            dtype=settings.dtype,
            torch_threads=settings.torch_threads,
        )

    def threads(self) -> Choice:
        """torch's intra-op threads for this provider's models, and why
        (:func:`thresher.core.precision.choose_threads`); applied to torch on the first load."""
        with self._lock:
            if self._threads is None:
                import torch

                current = torch.get_num_threads()
                self._threads = choose_threads(self.torch_threads, current)
                if self._threads.value != current:
                    torch.set_num_threads(int(self._threads.value))
            return self._threads

    def _cached(self, key: tuple[str, ...], load: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self.threads()
                start = time.perf_counter()
                self._cache[key] = load()
                seconds = time.perf_counter() - start
                self.events.append(LoadEvent(key[0], key[1], key[2], seconds))
                log.info("loaded %s %s on %s in %.2fs", key[0], key[1], key[2], seconds)
            return self._cache[key]

    def embedder(
        self, name: str = DEFAULT_EMBEDDER, device: str | None = None, dtype: str | None = None
    ) -> Embedder:
        """A sentence-transformers embedder (all-MiniLM-L6-v2 by default).

        ``dtype="bfloat16"`` halves the weights a query streams through (MiniLM's forward pass
        on a short query is memory-bound on the CPU); vectors stay float32 and differ from the
        float32 model's by a cosine of about 1e-4.
        """
        name = canonical_name(name)
        dev = resolve_device(device or self.device)
        torch_dtype = self._torch_dtype(dtype or self.dtype, dev)

        def load() -> Embedder:
            path = embedder_path(name)
            try:
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(path), device=dev, local_files_only=True)
            except ImportError as exc:
                raise ModelUnavailableError(
                    "sentence-transformers is not installed.",
                    package="sentence-transformers",
                    install="pip install 'thresher[models]'",
                ) from exc
            except Exception as exc:
                raise ModelUnavailableError(
                    f"Could not load embedder {name!r} from {path} ({type(exc).__name__}: {exc})."
                ) from exc
            if torch_dtype != "float32":
                import torch

                model.to(getattr(torch, torch_dtype))
            return Embedder(model, name=name, device=dev)

        return self._cached(("embedder", name, dev, torch_dtype), load)

    def causal_lm(
        self, name: str = DEFAULT_SCORER, device: str | None = None, dtype: str | None = None
    ) -> CausalLM:
        """A causal LM and its tokenizer, converted from a shipped GGUF on first use."""
        name = canonical_name(name)
        dev = resolve_device(device or self.device)
        torch_dtype = self._torch_dtype(dtype or self.dtype, dev)

        def load() -> CausalLM:
            path = causal_lm_path(name, self.cache_dir)
            try:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=getattr(torch, torch_dtype)
                )
            except ImportError as exc:
                raise ModelUnavailableError(
                    "transformers is not installed.",
                    package="transformers",
                    install="pip install 'thresher[models]'",
                ) from exc
            except Exception as exc:
                raise ModelUnavailableError(
                    f"Could not load causal LM {name!r} from {path} ({type(exc).__name__}: {exc})."
                ) from exc
            model.to(dev).eval()
            return CausalLM(name, path, model, tokenizer, dev, torch_dtype)

        return self._cached(("causal-lm", name, dev, torch_dtype), load)

    def scorer(
        self,
        name: str = DEFAULT_SCORER,
        device: str | None = None,
        dtype: str | None = None,
        **options: Any,
    ) -> TokenScorer:
        """A TokenScorer over :meth:`causal_lm` (the model itself is shared)."""
        lm = self.causal_lm(name, device, dtype)
        return TokenScorer(lm.model, lm.tokenizer, name=lm.name, device=lm.device, **options)

    def compression_scorer(
        self, name: str = DEFAULT_SCORER, device: str | None = None, dtype: str | None = None
    ) -> TokenScorer:
        """The scorer of prompt compression, one policy for every way in (the proxy's stage,
        ``/v1/compress``, ``thresher compress``), so one input compresses one way and the model
        loads once: in :meth:`compression_dtype` unless ``dtype`` is given. The wrapper is built
        once too (it reads the tokenizer's whole vocabulary)."""
        dev = resolve_device(device or self.device)
        torch_dtype = self._torch_dtype(dtype or self.compression_dtype(dev), dev)
        key = ("scorer", canonical_name(name), dev, torch_dtype)
        with self._lock:
            if key not in self._wrappers:
                self._wrappers[key] = self.scorer(name, dev, torch_dtype)
            return self._wrappers[key]

    def compression_dtype(self, device: str | None = None) -> str:
        """The dtype of compression's models (scoring LM, token classifier, ranking embedder):
        :meth:`compression_precision`'s choice."""
        return str(self.compression_precision(device).value)

    def compression_precision(self, device: str | None = None) -> Choice:
        """The dtype compression's models run in on ``device``, and why: the ``dtype`` setting
        when it is not ``auto``; on CUDA bf16 (float16 where the GPU lacks bf16); on the CPU
        what :func:`thresher.core.precision.choose_cpu_dtype` makes of :attr:`cpu_probe`
        (measured once, with this provider's threads); float32 elsewhere (MPS)."""
        dev = resolve_device(device or self.device)
        if self.dtype != "auto":
            return Choice(self.dtype, f"THRESHER_DTYPE={self.dtype} (set)")
        if dev.startswith("cuda"):
            import torch

            if torch.cuda.is_bf16_supported():
                return Choice("bfloat16", f"bf16 is native on {dev}")
            return Choice("float16", f"{dev} has no bf16: float16")
        if dev != "cpu":
            return Choice("float32", f"float32 on {dev}")
        with self._lock:
            if self._cpu_dtype is None:
                self.threads()
                self._cpu_dtype = choose_cpu_dtype(self.cpu_probe())
            return self._cpu_dtype

    def token_classifier(
        self,
        name: str = DEFAULT_CLASSIFIER,
        device: str | None = None,
        dtype: str | None = None,
        *,
        field: str = "model",
    ) -> TokenClassifier:
        """A token classifier for LLMLingua-2: Thresher's embedded one by default, or any Hugging
        Face ``AutoModelForTokenClassification`` folder whose label 1 means keep.

        A folder that is missing or is not a two-label token classifier is an ``InputError``
        naming ``field`` (checked before anything loads).
        """
        embedded = name == DEFAULT_CLASSIFIER
        path = None if embedded else token_classifier_folder(name, field)
        dev = resolve_device(device or self.device)
        torch_dtype = self._torch_dtype(dtype or self.dtype, dev)

        def load() -> TokenClassifier:
            try:
                import torch
                from transformers import AutoModelForTokenClassification, AutoTokenizer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise ModelUnavailableError(
                    "transformers is not installed.",
                    package="transformers",
                    install="pip install 'thresher[models]'",
                ) from exc
            folder = embedder_path("all-MiniLM-L6-v2") if embedded else path
            try:
                tokenizer = AutoTokenizer.from_pretrained(folder)
                if embedded:
                    model = _embedded_classifier(
                        folder, AutoModelForTokenClassification, hf_logging
                    )
                else:
                    model = AutoModelForTokenClassification.from_pretrained(folder)
            except ModelUnavailableError:
                raise
            except Exception as exc:
                raise ModelUnavailableError(
                    f"Could not load token classifier {name!r} from {folder} "
                    f"({type(exc).__name__}: {exc})."
                ) from exc
            if not getattr(tokenizer, "is_fast", False):
                raise ModelUnavailableError(
                    f"The tokenizer of {name!r} is not a fast tokenizer; LLMLingua-2 needs "
                    "character offsets (a tokenizer.json)."
                )
            model.to(device=dev, dtype=getattr(torch, torch_dtype)).eval()
            window = EMBEDDED_WINDOW if embedded else 512
            return TokenClassifier(model, tokenizer, name=name, device=dev, max_length=window)

        return self._cached(("token-classifier", name, dev, torch_dtype), load)

    def token_counter(self, name: str = "cl100k_base") -> TokenCounter:
        """Counts with tiktoken for OpenAI encodings and models, else with a local tokenizer."""
        encoding = tiktoken_encoding_for(name)
        if encoding is not None:
            return self._cached(("counter", encoding, "-"), lambda: TiktokenCounter(encoding).fit())
        canonical = canonical_name(name)

        def load() -> HFTokenCounter:
            from transformers import AutoTokenizer

            path = causal_lm_path(canonical, self.cache_dir)
            return HFTokenCounter(AutoTokenizer.from_pretrained(path), canonical)

        return self._cached(("counter", canonical, "-"), load)

    def loaded(self) -> list[str]:
        """Names of the models loaded so far, as ``kind:name@device`` plus ``/dtype`` for torch
        models (the scorer and the local backend may hold one model in two dtypes)."""
        with self._lock:
            return [f"{k[0]}:{k[1]}@{k[2]}" + "".join(f"/{d}" for d in k[3:]) for k in self._cache]

    @staticmethod
    def _check_dtype(dtype: str) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"Unknown dtype {dtype!r}; use one of {DTYPES}.", field="dtype")

    def _torch_dtype(self, dtype: str, device: str) -> str:
        self._check_dtype(dtype)
        if dtype != "auto":
            return dtype
        # bf16 on an accelerator; fp32 on the CPU, where log-probs must be exact and repeatable.
        return "bfloat16" if device.startswith("cuda") else "float32"


def _embedded_classifier(base: Path, auto_cls: Any, hf_logging: Any) -> Any:
    """all-MiniLM-L6-v2 from its pip package with Thresher's trained top layer and head."""
    from safetensors.torch import load_file

    if not CLASSIFIER_WEIGHTS.is_file():
        raise ModelUnavailableError(
            f"The embedded classifier's weights {CLASSIFIER_WEIGHTS} are missing; rebuild them "
            "with: python -m thresher.compression.train.llmlingua2"
        )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is "newly initialised" until the weights load
    try:
        model = auto_cls.from_pretrained(
            base, num_labels=2, id2label={0: "drop", 1: "keep"}, label2id={"drop": 0, "keep": 1}
        )
    finally:
        hf_logging.set_verbosity(verbosity)
    trained = load_file(str(CLASSIFIER_WEIGHTS))
    own = model.state_dict()
    unknown = sorted(set(trained) - set(own))
    if unknown:
        raise ModelUnavailableError(
            f"{CLASSIFIER_WEIGHTS} does not fit all-MiniLM-L6-v2 (unknown keys {unknown[:3]})."
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in trained.items()}, strict=False)
    return model
