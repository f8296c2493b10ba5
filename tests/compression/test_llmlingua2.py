"""llmlingua2: the token classifier, question-aware ranking, and model folders."""

import numpy as np
import pytest

from thresher.compression import get_compressor
from thresher.compression.llmlingua2 import collapse_punctuation, lexical_similarity
from thresher.core.errors import InputError

NEEDLE = "The code for the stable is 3614."


def planted(story: str) -> str:
    cut = story.find(". ", len(story) // 2) + 2
    return story[:cut] + NEEDLE + " " + story[cut:]


def test_keep_probs_cover_every_token_in_sentence_windows(classifier, stories):
    text = "\n\n".join(s["context"] for s in stories[:3])  # well over one 512-token window
    (probs,) = classifier.keep_probs([text])
    ids = classifier.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(probs.keep) == len(probs.offsets) == len(ids) > classifier.max_length
    assert np.all((probs.keep > 0) & (probs.keep < 1))
    offsets = probs.offsets
    windows = classifier.windows(ids, offsets, text)
    assert windows[0][0] == 0 and windows[-1][1] == len(ids)
    assert all(e - s <= classifier.max_length - 2 for s, e in windows)
    for _, end in windows[:-1]:  # cut after a sentence end
        assert text[offsets[end - 1][0] : offsets[end - 1][1]] in {".", "!", "?", ";", "\n"} or (
            "\n" in text[offsets[end - 1][1] : offsets[end][0]]
        )


def test_the_trained_head_prefers_content_words(classifier):
    text = "The detective found the missing silver key under the old bridge in Manchester."
    (probs,) = classifier.keep_probs([text])
    word = {text[a:b]: p for (a, b), p in zip(probs.offsets, probs.keep, strict=True)}
    assert word["key"] > word["the"] and word["detective"] > word["the"]


def test_a_planted_fact_survives_as_a_sentence(compressors, stories):
    text = planted(stories[2]["context"])
    result = compressors["llmlingua2"].compress(
        text, question="What is the code for the stable?", rate=0.33
    )
    assert NEEDLE in result.text
    assert "kept whole" in result.note
    target = round(result.origin_tokens * 0.33)
    assert abs(result.compressed_tokens - target) <= 0.1 * target


def test_without_a_question_it_is_plain_llmlingua2(compressors, stories, counter):
    result = compressors["llmlingua2"].compress(stories[0]["context"], rate=0.4)
    assert result.note is None
    assert result.compressed_tokens <= result.origin_tokens
    assert ", ," not in result.text and ". ." not in result.text


@pytest.mark.parametrize("ranker", ["lexical", "none"])
def test_other_rankers(ranker, classifier, counter, stories):
    c = get_compressor("llmlingua2", scorer=classifier, counter=counter, ranker=ranker)
    result = c.compress(planted(stories[2]["context"]), question="Stable code?", rate=0.33)
    assert "3614" in result.text  # digits are protected whatever the ranker


def test_helpers():
    pieces = ["The", " cat", ",", " sat", ",", " down", "."]
    mask = np.array([True, True, True, False, True, False, True])
    collapse_punctuation(pieces, mask, np.zeros(7, bool))
    assert mask.tolist() == [True, True, False, False, False, False, True]
    sims = lexical_similarity("stable code", ["the stable code is here", "a horse"])
    assert sims[0] > sims[1]


def test_needs_a_token_classifier(fast_scorer, counter):
    with pytest.raises(InputError, match="needs a token classifier") as info:
        get_compressor("llmlingua2", scorer=fast_scorer, counter=counter)
    assert info.value.field == "model"


def test_a_token_classification_folder_loads_and_agrees(classifier, provider, tmp_path):
    classifier.model.save_pretrained(tmp_path)
    classifier.tokenizer.save_pretrained(tmp_path)
    other = provider.token_classifier(str(tmp_path))
    text = "The detective found the missing key."
    (a,), (b,) = classifier.keep_probs([text]), other.keep_probs([text])
    assert np.allclose(a.keep, b.keep, atol=1e-3)


def test_bad_folders_say_what_was_found(provider, tmp_path):
    with pytest.raises(InputError, match="found nothing") as info:
        provider.token_classifier(str(tmp_path / "missing"))
    assert info.value.field == "model"
    from thresher.core.catalog import causal_lm_path

    lm = causal_lm_path("SmolLM2-135M-Instruct", provider.cache_dir)
    with pytest.raises(InputError, match="LlamaForCausalLM.*not a token classifier"):
        provider.token_classifier(str(lm))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(InputError, match="no config.json"):
        provider.token_classifier(str(tmp_path))


def test_one_pass_gives_the_embedders_token_vectors(classifier, embedder):
    """The embedder's top layer runs on the classifier's hidden states: the same vectors as the
    embedder's own pass, and the same keep probabilities as without it."""
    import torch

    assert classifier.shares_encoder(embedder)
    text = "The detective found the missing silver key under the old bridge. It was late."
    (alone,), (both,) = (
        classifier.keep_probs([text]),
        classifier.keep_probs([text], embedder=embedder),
    )
    assert alone.vectors is None and np.array_equal(alone.keep, both.keep)
    ids = embedder.model.tokenizer(text, return_tensors="pt").to(embedder.device)
    with torch.inference_mode():
        own = embedder.model[0].auto_model(**ids).last_hidden_state[0, 1:-1].float().cpu().numpy()
    assert both.vectors.shape == own.shape
    assert np.allclose(both.vectors, own, atol=1e-4)


def test_an_encoder_of_its_own_ranks_by_embedding_sentences(classifier, embedder, counter, stories):
    import copy

    import torch

    from thresher.core.token_classifier import TokenClassifier

    model = copy.deepcopy(classifier.model)
    other = TokenClassifier(model, classifier.tokenizer, name="other", device=classifier.device)
    with torch.no_grad():
        other.model.base_model.embeddings.word_embeddings.weight.mul_(1.01)
    assert not other.shares_encoder(embedder)
    c = get_compressor("llmlingua2", scorer=other, counter=counter, embedder=embedder)
    result = c.compress(planted(stories[2]["context"]), question="Stable code?", rate=0.33)
    assert NEEDLE in result.text and "kept whole" in result.note
