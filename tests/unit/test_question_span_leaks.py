"""The leak check sees the embedded question: the question's own words are not leaks inside its copy in the
instruction, and only there."""

from __future__ import annotations

import pytest

from uniedit_synth.method.answers import leaks_answer

QUESTION = "What colour is the square left of the red circle?"


@pytest.mark.parametrize(
    ("instruction", "leaks"),
    [
        # the question quoted or reworded around the answer's word: not a leak
        ('Answer "What colour is the square left of the red circle?" and paint that square pink.', None),
        ("Work out the colour of the square left of the red circle, then add a cone of that colour.", None),
        (
            "Identify the colour of the square to the left of the red circle and draw a star in that colour.",
            None,
        ),
        (
            "Look at the square just left of the red circle; if it is blue, enlarge it, otherwise shrink it.",
            None,
        ),
        # the answer said outside the question's copy: still a leak
        ("Work out the colour of the square left of the red circle. Paint it red.", "red"),
        ("Find the square left of the red circle; the answer is red, so add a red cube.", "red"),
        ("Add a red cone next to the square.", "red"),
        ("Paint the red circle blue.", "red"),  # the question's words, but not inside its copy
        ("Determine the square's colour (reddish? red!) left of the circle.", "red"),
    ],
)
def test_question_words_are_allowed_only_inside_the_question(instruction: str, leaks: str | None) -> None:
    assert leaks_answer(instruction, "red", question=QUESTION) == leaks


def test_without_the_question_the_check_is_as_before() -> None:
    text = "Work out the colour of the square left of the red circle, then add a cone of that colour."
    assert leaks_answer(text, "red") == "red"


def test_numbers_in_the_question_and_plural_forms() -> None:
    question = "How many cubes are behind the 3 spheres?"
    assert (
        leaks_answer(
            "Count the cubes behind the three spheres and add that many cones.", "3", question=question
        )
        is None
    )
    assert (
        leaks_answer("Count the cubes behind the 3 spheres, then add 3 cones.", "3", question=question) == "3"
    )
    question = "What shape is next to the two cubes?"
    assert (
        leaks_answer("Find what is next to the two cubes and add one more of it.", "cube", question=question)
        is None
    )
    assert (
        leaks_answer("Find what is next to the two cubes and add a cube.", "cube", question=question)
        == "cube"
    )
