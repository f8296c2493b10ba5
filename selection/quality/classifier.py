"""A learned quality classifier on hashed word n-grams, fitted on a good set versus a raw set.

In the manner of the GPT-3 and PaLM data filters (Brown et al., 2020, "Language Models are
Few-Shot Learners", Appendix A): a linear classifier on hashed n-gram features separates a
reference of good text from raw data, and its probability is the row's quality score. Features
come from scikit-learn's stateless ``HashingVectorizer``; the model is saved as its weight arrays
plus a JSON config (never a pickle) and applied as a scorer without scikit-learn's estimator.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from thresher.core.errors import InputError, NotFoundError, require
from thresher.core.record import Record
from thresher.selection.quality.turns import turns


def record_features_text(record: Record) -> str:
    """What the classifier reads: every response of the record (the part data cleaning judges)."""
    return "\n".join(t.response for t in turns(record))


@dataclass
class QualityClassifier:
    """Logistic regression on hashed 1..``ngram`` grams; ``score`` is P(good).

    Args:
        n_features: hash buckets.
        ngram: longest n-gram.
        analyzer: ``word`` n-grams, or ``char_wb`` character n-grams inside word boundaries
            (these also see words never met in training, such as noise or pseudo-words).
        C: inverse regularisation strength.
        name: the score's name.
    """

    n_features: int = 2**18
    ngram: int = 2
    analyzer: Literal["word", "char_wb"] = "word"
    C: float = 1.0
    name: str = "classifier"
    coef_: np.ndarray | None = field(default=None, init=False, repr=False)
    intercept_: float = field(default=0.0, init=False)

    def _vectorizer(self) -> Any:
        text = require("sklearn.feature_extraction.text", "selection")
        return text.HashingVectorizer(
            n_features=self.n_features,
            ngram_range=(1, self.ngram),
            analyzer=self.analyzer,
            alternate_sign=False,
            norm="l2",
        )

    def fit(self, good: Sequence[str], raw: Sequence[str]) -> QualityClassifier:
        """Learn to tell ``good`` texts (label 1) from ``raw`` ones (label 0)."""
        if not good or not raw:
            raise InputError("fit needs at least one good and one raw text.", field="good")
        from sklearn.linear_model import LogisticRegression

        features = self._vectorizer().transform(list(good) + list(raw))
        labels = np.r_[np.ones(len(good)), np.zeros(len(raw))]
        model = LogisticRegression(C=self.C, max_iter=1000, class_weight="balanced").fit(
            features, labels
        )
        self.coef_ = model.coef_[0].astype(np.float64)
        self.intercept_ = float(model.intercept_[0])
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(good) for each text."""
        if self.coef_ is None:
            raise InputError("QualityClassifier is not fitted; call fit() or load() first.")
        features = self._vectorizer().transform(list(texts))
        logits = features @ self.coef_ + self.intercept_
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def score(self, records: Sequence[Record]) -> np.ndarray:
        return self.predict_proba([record_features_text(r) for r in records])

    def save(self, folder: str | Path) -> None:
        """Write ``weights.npz`` (coef, intercept) and ``config.json``."""
        if self.coef_ is None:
            raise InputError("Nothing to save: the classifier is not fitted.")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "weights.npz", coef=self.coef_, intercept=np.array([self.intercept_]))
        config = {
            "n_features": self.n_features,
            "ngram": self.ngram,
            "analyzer": self.analyzer,
            "C": self.C,
            "name": self.name,
        }
        (folder / "config.json").write_text(json.dumps(config))

    @classmethod
    def load(cls, folder: str | Path) -> QualityClassifier:
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise NotFoundError(
                f"No classifier in {folder} (config.json is missing).", field="path"
            )
        model = cls(**json.loads((folder / "config.json").read_text()))
        with np.load(folder / "weights.npz") as data:
            model.coef_ = data["coef"].astype(np.float64)
            model.intercept_ = float(data["intercept"][0])
        return model
