"""Caches notice code changes: the trained-results cache key carries a version bumped with the code."""

from __future__ import annotations

from helpers.provenance import code_only as _code_only
from helpers.tuning import cache_version, reflections, search, spaces


def test_training_code_unchanged_since_the_cache_version_was_set() -> None:
    now = cache_version.sources_hash()
    assert now == cache_version.SOURCES_HASH, (
        f"helpers/{{{','.join(cache_version.CACHED_MODULES)}}} changed: cached trials and reflections results "
        f"were computed by the old code. Bump CACHE_VERSION (now {cache_version.CACHE_VERSION}) in "
        f"helpers/cache_version.py and set SOURCES_HASH = {now!r}."
    )


def test_comments_and_docstrings_do_not_count_but_code_does() -> None:
    base = 'def f(x):\n    """Doc."""\n    return x + 1\n'
    assert _code_only(base) == _code_only('def f(x):\n    """Other words."""\n    # a note\n    return x + 1\n')
    assert _code_only(base) != _code_only('def f(x):\n    """Doc."""\n    return x + 2\n')


def test_the_version_is_part_of_every_cache_key(monkeypatch) -> None:
    spec = search.SearchSpec("s", "tpe", 0, 5)
    config = reflections.Config("a", {}, {}, {"epochs": 1})

    class Data:
        name, mean = "d", (0.5,)

        def sizes(self) -> str:
            return "1 train"

    before = (spec.key(), reflections._key(config, 0, Data()))
    monkeypatch.setattr(cache_version, "CACHE_VERSION", cache_version.CACHE_VERSION + 1)
    after = (spec.key(), reflections._key(config, 0, Data()))
    assert before[0] != after[0] and before[1] != after[1]


def test_trials_of_older_training_code_are_not_extended(tmp_path, monkeypatch) -> None:
    import pytest
    from hyperopt import STATUS_OK

    def objective(params: dict) -> dict:
        return {"status": STATUS_OK, "loss": params["dropout"], "val_acc": 1 - params["dropout"]}

    path = tmp_path / "t.json"
    search.run_search(objective, spaces.lenet_space(), search.SearchSpec("s", "random", 0, 2), path, progress=False)
    monkeypatch.setattr(cache_version, "CACHE_VERSION", cache_version.CACHE_VERSION + 1)
    with pytest.raises(search.SearchMismatchError, match="older training code.*delete it"):
        search.run_search(objective, spaces.lenet_space(), search.SearchSpec("s", "random", 0, 4), path, progress=False)
