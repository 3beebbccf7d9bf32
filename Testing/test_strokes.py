"""The stroke protocol: one scribble labelmap carries "this is organ v" (v) and "this is not
organ v" (REMOVE_OFFSET + v) for one or several organs, written by the Slicer module and read by
``deeporganseg refine`` through the same functions."""

from __future__ import annotations

import numpy as np

from DeepOrganSegLib.strokes import (REMOVE_OFFSET, Scribbles, encode_strokes, labelmap_codes,
                                     scribbles_for, stroked_organs)


def test_strokes_survive_the_labelmap_round_trip():
    add = np.zeros((4, 5, 6), bool)
    remove = np.zeros((4, 5, 6), bool)
    add[1, 1:3, 2] = True
    remove[2, 4, 1:4] = True
    labelmap = encode_strokes(Scribbles(add, remove), 7)
    assert labelmap.dtype == np.uint8
    assert set(np.unique(labelmap)) == {0, 7, REMOVE_OFFSET + 7}
    decoded = scribbles_for(labelmap, 7)
    np.testing.assert_array_equal(decoded.add, add)
    np.testing.assert_array_equal(decoded.remove, remove)


def test_a_voxel_both_added_and_removed_is_removed():
    both = np.ones((2, 2, 2), bool)
    labelmap = encode_strokes(Scribbles(both, both), 3)
    assert (labelmap == REMOVE_OFFSET + 3).all()


def test_the_organs_with_strokes_are_found_whichever_kind():
    labelmap = np.zeros((3, 3, 3), np.float32)  # a resampled file may hold floats
    labelmap[0, 0, 0] = 2
    labelmap[1, 1, 1] = REMOVE_OFFSET + 5
    labelmap[2, 2, 2] = 5
    assert stroked_organs(labelmap) == [2, 5]
    assert stroked_organs(np.zeros((2, 2, 2))) == []
    assert stroked_organs(labelmap.astype(np.uint8)) == [2, 5]  # as a labelmap file reads


def test_integer_labelmaps_are_used_as_read_and_float_ones_rounded():
    read = np.array([[[0, 3, 131]]], np.uint8)
    assert labelmap_codes(read) is read  # no copy of a whole CT on every refinement
    np.testing.assert_array_equal(labelmap_codes(np.array([0.2, 2.9, 130.6])), [0, 3, 131])
