"""No-op and identical branches caught by meaning (method/edit_meaning.py), not by a keyword list: tables of
no-op wordings, visible edits, identical edits reworded and legitimately different edits."""

from __future__ import annotations

import pytest

from uniedit_synth.method.edit_meaning import edit_meaning, is_visible_edit, same_edit
from uniedit_synth.stages.rewrite import is_no_op

NO_OP = [
    "leave it unchanged", "leave the sphere as it is", "do nothing", "keep it as is", "keep the object untouched",
    "do not change anything", "make no changes", "no change", "nothing",
    "the picture should stay exactly the way it looks now", "keep everything the same", "let the image be",
    "don't touch it", "don't edit the image", "skip the edit", "the scene remains as it was",
    "nothing needs to happen", "keep the original image", "leave everything exactly where it is",
    "make no modifications whatsoever", "the image stays the same", "do not modify the scene",
    "don't alter a thing", "preserve the image as it is", "retain the current look of the picture",
    "keep the scene intact", "leave the cube alone", "the cube should remain the way it is", "it stays as it is",
    "change nothing", "do not make any edits", "no edit is needed", "no modification", "N/A", "none",
    "keep the current appearance", "let it stay as it is", "the image does not need to be changed",
    "just leave the scene as it is", "the sphere must not be repainted", "there is nothing to change",
    "maintain the image without any edits", "do not add anything", "never remove anything",
    "keep the sphere exactly as it appears", "the picture should look the way it does now",
    "let everything remain in its place", "carry on without editing", "hold the scene steady as it is",
    "make sure nothing changes", "make it look exactly as it does now", "the sphere stays purple",
]
VISIBLE = [
    "paint it red", "add a small yellow cube beside it", "keep its shape but paint it red", "remove the cone",
    "enlarge the sphere", "make the cube smaller", "turn the cylinder into a cone", "write the answer on the sign",
    'hang a sign with the word "EXIT"', "place a green ball on the left", "take the red cube out of the scene",
    "get rid of the cylinder", "recolour the sphere gold", "replace the cube with a pyramid",
    "shrink the large metal cube", "double the size of the sphere", "put a blue cone next to the cylinder",
    "draw a star on the wall", "rotate the cube", "move the sphere to the left", "make the sphere shiny metal",
    "give the cube a purple colour", "change the colour of the cone to orange", "the sphere should be painted red",
    "have the cube painted white", "insert a tiny rubber cylinder in the front row", "delete every cube",
    "erase the word on the board", "duplicate the red sphere", "outline the cube in yellow",
    "highlight the largest object", "blur the background", "cover the cube with stripes",
    "fill the panel with blue", "tint the top left corner red", "write the result on the board",
    "put up a white sign showing the number", "scale up the cone", "leave the cube but repaint the sphere blue",
    "keep everything else, only remove the cone", "draw a white panel in the top left corner with the answer on it",
    "if the colour is warm, like fire or sunshine, enlarge the cone, and if not, remove the cone",
    "if not, remove the cone", "circle the cube in red", "add a red circle",
    "take the green rubber object out of the scene", "make the cat wear a hat",
]
SAME = [
    ("repaint the sphere white", "paint the sphere in a white colour"),
    ("paint it red", "colour it red"),
    ("recolour the cube blue", "make the cube blue"),
    ("paint the cube grey", "repaint the cube gray"),
    ("add a red cube beside the sphere", "place a red cube next to the sphere"),
    ("put a small yellow box next to the ball", "add a tiny yellow cube beside the sphere"),
    ("remove the cone", "delete the cone"),
    ("take the cone out of the scene", "erase the cone"),
    ("get rid of the red cylinder", "remove the red cylinder"),
    ("enlarge the sphere", "make the sphere bigger"),
    ("make the cube larger", "scale up the cube"),
    ("shrink the cylinder", "make the cylinder smaller"),
    ("turn the cube into a cone", "transform the cube into a cone"),
    ("replace the cube with a cone", "convert the cube into a cone"),
    ('write the word "EXIT" on the sign', 'print the word "EXIT" on the sign'),
    ("paint the large sphere purple", "give the large sphere a purple colour"),
    ("change the colour of the cone to orange", "recolor the cone orange"),
    ("dye the cube yellow", "tint the cube yellow"),
    ("add two blue spheres", "place two blue balls"),
    ("insert a green cylinder on the left", "put a green cylinder on the left"),
    ("paint the tiny cube white", "repaint it white"),
    ("move the sphere to the left", "shift the sphere to the left"),
    ("rotate the cube", "spin the cube"),
    ("duplicate the red sphere", "copy the red sphere"),
    ("the sphere should be painted red", "paint the sphere red"),
    ("recolour the sphere red", "the sphere gets repainted red"),
    ("make the cube metallic", "make the cube shiny"),
    ("add a large cone at the far left of the back row", "place a big cone at the far left of the back row"),
    ("remove every cube", "delete all the cubes"),
    ("paint the cube in a red colour", "colour the cube red"),
    ("enlarge the tiny cube", "make the little cube larger"),
    ("put a white sign on the wall", "hang a white sign on the wall"),
    ("add a star on the wall", "put a star on the wall"),
    ("repaint the tiny sphere red without changing its shape or size", "paint the tiny sphere red, keeping its shape and size"),
    ("add a yellow cube beside it", "place a yellow box right beside it"),
    ("take away the cylinder", "remove the cylinder"),
    ("make the ball blue", "recolour the sphere blue"),
    ("swap the cone for a cube", "replace the cone with a cube"),
    ("turn the sphere green", "paint the sphere green"),
    ("make it huge", "make it large"),
    ("put three red cubes on the floor", "add 3 red cubes on the floor"),
    ("remove the sphere from the image", "delete the ball from the picture"),
    ("repaint the tiny sphere white", "paint the tiny sphere in a white colour"),
    ("apply white paint to the sphere", "repaint the sphere white"),
]
DIFFERENT = [
    ("paint the sphere red", "paint the sphere blue"),
    ("paint the sphere red", "add a red cube beside the sphere"),
    ("remove the cone", "remove the cube"),
    ("enlarge the sphere", "shrink the sphere"),
    ("turn the cube into a cone", "turn the cone into a cube"),
    ("add a red cube on the left", "add a red cube on the right"),
    ("add two blue spheres", "add three blue spheres"),
    ("paint the red cube blue", "paint the blue cube red"),
    ('write "EXIT" on the sign', 'write "ENTER" on the sign'),
    ("remove the cone", "paint the cone yellow"),
    ("add a cone", "add a cylinder"),
    ("move the sphere left", "move the sphere right"),
    ("make the cube metal", "make the cube rubber"),
    ("paint the cube gold", "paint the cube silver"),
    ("put a sign on the wall", "put a cube on the floor"),
    ("enlarge the cube", "enlarge the sphere"),
    ("recolour the cylinder brown", "remove the cylinder"),
    ("add a yellow star at the top", "add a yellow star at the bottom"),
    ("replace the cube with a cone", "replace the cube with a sphere"),
    ('hang a sign reading "HONEY"', 'hang a sign reading "LEMON"'),
    ("delete every cube", "delete every sphere"),
    ("paint the large sphere red", "paint the small sphere red"),
    ("add a small green cone in the front row", "add a large green cone in the front row"),
    ("tint the top left corner red", "tint the bottom right corner red"),
    ("draw a white panel in the top left corner", "fill a solid panel in the bottom right corner with red"),
    ("recolour the cube green", "recolour the cube to match the sphere"),
    ("shrink the red object", "enlarge the red object"),
    ("rotate the cube", "remove the cube"),
    ("paint it red", "paint it pink"),
    ("add a rubber cube", "add a metal cube"),
    ("write the result on the board", "write the result on the sign"),
    ("remove the pink object", "remove the purple object"),
    ("make the sphere bigger", "make the sphere red"),
    ("place a cube next to the sphere", "place a cube behind the sphere"),
    ("paint every cube orange", "paint every cone orange"),
    ("add 4 stars", "add 5 stars"),
    ("turn the sphere into a cube", "turn the sphere into a cylinder"),
    ("take the cone out of the scene", "make the cone larger"),
    ('write the word "MOON" on the panel', 'put up a sign showing "MOON" on the wall'),
    ("paint the cylinder cyan", "paint the cylinder teal"),
    ("double the size of the cube", "halve the size of the cube"),
    ("repaint the tiny sphere red", "place a small yellow cube beside the tiny sphere"),
]


def test_tables_are_big_enough() -> None:
    assert min(len(NO_OP), len(VISIBLE), len(SAME), len(DIFFERENT)) >= 40


@pytest.mark.parametrize("text", NO_OP)
def test_no_op_wordings_name_no_visible_action(text: str) -> None:
    assert is_no_op(text) and not is_visible_edit(text), edit_meaning(text)


@pytest.mark.parametrize("text", VISIBLE)
def test_visible_edits_are_not_no_ops(text: str) -> None:
    assert is_visible_edit(text) and not is_no_op(text), edit_meaning(text)


@pytest.mark.parametrize(("first", "second"), SAME)
def test_rewordings_of_one_edit_are_the_same_edit(first: str, second: str) -> None:
    assert same_edit(first, second) and same_edit(second, first), (edit_meaning(first), edit_meaning(second))


@pytest.mark.parametrize(("first", "second"), DIFFERENT)
def test_different_edits_are_different(first: str, second: str) -> None:
    assert not same_edit(first, second) and not same_edit(second, first), (edit_meaning(first), edit_meaning(second))


def test_a_no_op_is_never_the_same_edit_as_anything() -> None:
    assert not same_edit("leave it unchanged", "keep it as is")


#: declining the edit in words that name an edit ("skip the edit entirely"): a no-op, however phrased (issue 24)
DECLINED = [
    "skip the edit entirely", "skip the edit", "skip this edit altogether", "skip any change",
    "skip making any change to the picture", "skipping the modification is fine", "omit the edit",
    "omit any changes to the image", "omit the modification entirely", "forgo the edit", "forgo any modification",
    "forgo changing the picture", "forego the change", "refrain from editing the picture",
    "refrain from making any change", "refrain from any modification", "abstain from editing",
    "avoid any edit to the scene", "avoid changing anything", "avoid modifying the image",
    "decline to edit the picture", "bypass the edit", "cancel the edit", "withhold any modification",
    "pass on the edit", "skip over the proposed edit entirely", "omit painting the sphere",
    "refrain from repainting the cube", "skip adding anything",
]
#: legitimate edits that merely contain a declining word: still visible
NOT_DECLINED = [
    "avoid the cube and paint the sphere red", "move the sphere so that it avoids the cube",
    "paint the sphere red, skip nothing else", "add a red cube, then skip the rest",
    "remove the cone; avoid touching the cube", "enlarge the sphere to avoid any gap",
]
#: creating a painted mark (a stripe, band, strip, line or streak) is an `add` of that mark, however worded
MARKS_SAME = [
    ("paint a gold stripe along the front edge of the floor", "add a gold-coloured band at the front edge of the floor"),
    ("paint a red stripe along the front edge of the floor", "add a red band at the front edge of the floor"),
    ("draw a blue line across the floor", "add a blue stripe on the floor"),
    ("paint a green strip along the wall", "add a green band on the wall"),
    ("paint two white stripes on the floor", "add 2 white lines on the floor"),
    ("draw a yellow streak on the wall", "paint a yellow stripe on the wall"),
    ("add a thin gold band at the front of the floor", "paint a thin golden stripe along the front of the floor"),
    ("paint a purple line on the floor", "put a purple strip on the floor"),
]
#: marks that differ, or recolouring an existing mark: legitimately different edits
MARKS_DIFFERENT = [
    ("paint a gold stripe along the front edge of the floor", "add a silver band at the front edge of the floor"),
    ("paint a gold stripe along the front edge of the floor", "put a small gold cone in the front left corner of the floor"),
    ("paint a red stripe on the floor", "paint a red stripe on the wall"),
    ("paint the stripe red", "add a red stripe"),
    ("paint a blue stripe on the floor", "paint the floor blue"),
    ("draw two red lines on the floor", "draw three red lines on the floor"),
    ("add a gold band at the front of the floor", "add a gold band at the back of the floor"),
    ("paint a green stripe on the cube", "paint the cube green"),
]


@pytest.mark.parametrize("text", DECLINED)
def test_declining_the_edit_is_a_no_op(text: str) -> None:
    assert not is_visible_edit(text), edit_meaning(text)


@pytest.mark.parametrize("text", NOT_DECLINED)
def test_a_declining_word_elsewhere_keeps_the_edit_visible(text: str) -> None:
    assert is_visible_edit(text), edit_meaning(text)


@pytest.mark.parametrize(("first", "second"), MARKS_SAME)
def test_a_painted_mark_reworded_is_the_same_edit(first: str, second: str) -> None:
    assert same_edit(first, second) and same_edit(second, first), (edit_meaning(first), edit_meaning(second))


@pytest.mark.parametrize(("first", "second"), MARKS_DIFFERENT)
def test_different_marks_are_different_edits(first: str, second: str) -> None:
    assert not same_edit(first, second) and not same_edit(second, first), (edit_meaning(first), edit_meaning(second))
