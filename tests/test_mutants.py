"""tools/mutants.py stays usable: every mutant still plants (its text occurs exactly once
in today's source) and names tests that exist. Running the mutants is the tool's job
(10 minutes), not the suite's."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutants():
    spec = importlib.util.spec_from_file_location("mutants", ROOT / "tools" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_mutant_plants_exactly_once(mutants):
    assert len(mutants.MUTANTS) == 119
    for mutant in mutants.MUTANTS:
        texts = mutants.planted(mutant)  # raises MutantError if a text moved
        for rel, text in texts.items():
            assert text != (ROOT / rel).read_text(), f"{mutant.name} changes nothing in {rel}"


def test_every_mutant_names_tests_that_exist(mutants):
    for mutant in mutants.MUTANTS:
        assert len(mutant.tests) >= 2, mutant.name
        for test in mutant.tests:
            path, _, function = test.partition("::")
            assert (ROOT / path).is_file(), f"{mutant.name}: no {path}"
            assert not function or f"def {function}(" in (ROOT / path).read_text(), \
                f"{mutant.name}: no {function} in {path}"


def test_a_moved_text_is_refused(mutants):
    broken = mutants.Mutant("gone", "", [("cconv/model.py", "no such text", "")], [])
    with pytest.raises(mutants.MutantError, match="occurs 0 times"):
        mutants.planted(broken)
