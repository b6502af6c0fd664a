"""Leak check v2 and the one answer normaliser (uniedit_synth/method/answers.py), table-driven."""

from __future__ import annotations

import pytest

from uniedit_synth.method.answers import (
    candidate_in_condition,
    leaks_answer,
    mentions_answer,
    normalise_answer,
    same_answer,
)

# (instruction, answer, leaks?) — both directions: every form that gives the answer away, and the look-alikes
# that must not count.
LEAK_TABLE: list[tuple[str, str, bool]] = [
    # plain and case
    ("Paint the sphere red.", "red", True),
    ("Paint the sphere RED.", "red", True),
    ("Make the reddish glow stronger.", "red", False),
    ("Add a redwood tree.", "red", False),
    ("Paint it purple.", "Purple.", True),
    # singular / plural (inflect)
    ("Count the spheres and add a lamp.", "sphere", True),
    ("Remove every sphere.", "spheres", True),
    ("Add two boxes to the shelf.", "box", True),
    ("Place a box on the table.", "boxes", True),
    ("Count the mice in the barn.", "mouse", True),
    ("Draw a mouse.", "mice", True),
    ("Add a cherry to the cake.", "cherries", True),
    ("Draw some leaves.", "leaf", True),
    ("Draw a spherical lamp.", "sphere", False),
    ("Add a cubic vase.", "cube", False),
    ("Add a boxer to the ring.", "box", False),
    # British / American spellings
    ("Paint the cube grey.", "gray", True),
    ("Paint the cube gray.", "grey", True),
    ("Paint the cube greyish.", "gray", False),
    ("Add a sign reading colour.", "color", True),
    ("Hang a metre stick on the wall.", "meter", True),
    ("Draw an aluminium can.", "aluminum", True),
    ("Put the tyres in a pile.", "tire", True),
    ("Add an aeroplane to the sky.", "airplane", True),
    # digits and words, both ways
    ("Write three stars on the board.", "3", True),
    ("Write 3 stars on the board.", "three", True),
    ("Add twenty one candles.", "21", True),
    ("Add twenty-one candles.", "21", True),
    ("Add 21 candles.", "twenty-one", True),
    ("Add 25 candles.", "twenty five", True),
    ("Add twenty-five candles.", "25", True),
    ("Add one hundred and twenty-five beads.", "125", True),
    ("Add one hundred twenty five beads.", "125", True),
    ("Add 125 beads.", "one hundred and twenty-five", True),
    ("Write 1000 on the sign.", "one thousand", True),
    ("Write one thousand on the sign.", "1000", True),
    ("Write 1,000 on the sign.", "1000", True),
    ("Write nine hundred and ninety-nine on the sign.", "999", True),
    ("Write two thousand and five on the sign.", "2005", True),
    ("Write 12 on the board.", "12.0", True),
    ("Add one hundred twenty one beads.", "21", False),  # 121, not 21
    ("Add twenty one beads.", "1", False),
    ("Write 13 on the board.", "3", False),
    ("Write 3.5 on the board.", "3", False),
    ("Write 3.5 on the board.", "3.5", True),
    # ordinals
    ("Paint the third cube blue.", "3", True),
    ("Paint the 21st cube blue.", "21", True),
    ("Paint the twenty-first cube blue.", "21st", True),
    ("Paint the twenty-first cube blue.", "21", True),
    ("Paint cube number 21 blue.", "twenty-first", True),
    ("First, count the cubes and add a lamp.", "1", False),
    ("Wait a second, then add a lamp.", "2", False),
    # "one", "a", "an" are not numbers there
    ("Paint one of the cubes blue.", "1", False),
    ("Paint the red one blue.", "1", False),
    ("Move each one to the left.", "1", False),
    ("Add a lamp and an apple.", "1", False),
    ("Add one lamp.", "1", True),
    ("Add exactly one lamp.", "one", True),
    ("Add a lamp.", "a", False),
    ("Add an apple.", "an", False),
    # multi-word answers and accents
    ("Write George Orwell on the board.", "George Orwell", True),
    ("Write Orwell on the board.", "George Orwell", False),
    ("Write the word café on the sign.", "cafe", True),
    ("Write the word CAFE on the sign.", "café", True),
    ("Put a fire hydrant next to the car.", "fire hydrant", True),
    ("Put fire hydrants next to the car.", "fire hydrant", True),
    ("Put a fire truck next to the hydrant.", "fire hydrant", False),
]


@pytest.mark.parametrize(("instruction", "answer", "leaks"), LEAK_TABLE)
def test_leak_table(instruction: str, answer: str, leaks: bool) -> None:
    assert (leaks_answer(instruction, answer) is not None) == leaks
    assert mentions_answer(instruction, answer) == leaks


def test_leak_table_is_big_and_two_sided() -> None:
    assert len(LEAK_TABLE) >= 60
    assert sum(1 for *_, leaks in LEAK_TABLE if leaks) >= 25
    assert sum(1 for *_, leaks in LEAK_TABLE if not leaks) >= 20


# (instruction, answer, candidate_is_answer, leaks?) — the candidate exception
CANDIDATE_TABLE: list[tuple[str, str, bool, bool]] = [
    ("If it is purple, repaint it red; otherwise, add a yellow cube.", "purple", True, False),
    ("If it is purple, repaint it red; otherwise, add a yellow cube.", "purple", False, True),
    ("If it is purple, repaint it purple again.", "purple", True, True),  # outside the condition
    ("Repaint it purple if it is red.", "purple", True, True),
    ("Repaint it gold if it is purple.", "purple", True, False),
    ("Check whether the count is 3; if so, add a lamp.", "3", True, False),
    ("When there are three of them, add a lamp; otherwise add 3 cups.", "3", True, True),
    ("Then, if the count is three, add a lamp. If not, remove every cube.", "3", True, False),
    ("If the sphere is grey, paint it red.", "gray", True, False),
    ("If the sphere is grey, paint it red.", "gray", False, True),
]


@pytest.mark.parametrize(("instruction", "answer", "is_answer", "leaks"), CANDIDATE_TABLE)
def test_candidate_is_allowed_only_inside_the_condition(
    instruction: str, answer: str, is_answer: bool, leaks: bool
) -> None:
    assert (leaks_answer(instruction, answer, candidate_is_answer=is_answer) is not None) == leaks


def test_candidate_in_condition() -> None:
    assert candidate_in_condition("If it is purple, repaint it red.", "purple")
    assert candidate_in_condition("When the count is twenty-one, add a lamp.", "21")
    assert not candidate_in_condition("Repaint it purple if it is red.", "purple")
    assert not candidate_in_condition("If it is red, repaint it purple.", "purple")


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  The Red ", "red"),
        ("Three", "3"),
        ("a cube.", "cube"),
        ("  Three. ", "3"),
        ("12.0", "12"),
        ("twenty-one", "21"),
        ("Twenty First", "21st"),
        ("Grey", "gray"),
        ("a dog on a beach", "dog on a beach"),
        ("on the sofa", "on the sofa"),
        ("CAFE", "cafe"),
        ("Café", "cafe"),
        ("one of them", "one of them"),
        ("3.5", "3.5"),
        ("A", "a"),  # a multiple-choice letter, not an article
        ("(b)", "b"),
    ],
)
def test_normalise_answer(raw: str, normal: str) -> None:
    assert normalise_answer(raw) == normal


def test_one_normaliser_for_the_whole_package() -> None:
    import re
    from pathlib import Path

    import uniedit_synth
    import uniedit_synth.method.answers as answers
    from uniedit_synth.offline import choose, questions

    package = Path(uniedit_synth.__file__).parent
    defined = [p for p in package.rglob("*.py") if re.search(r"^def normali[sz]e_answer\b", p.read_text(), re.M)]
    assert defined == [package / "method" / "answers.py"]
    assert questions.normalise_answer is answers.normalise_answer is choose.normalise_answer


def test_same_answer() -> None:
    assert same_answer("grey", "Gray")
    assert same_answer("3", "three")
    assert same_answer("spheres", "sphere")
    assert not same_answer("3", "4")
    assert not same_answer("red", "reddish")
