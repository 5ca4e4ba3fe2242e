"""Display of image planes: plane choice, contrast, label colours, overlays (numpy only)."""

from __future__ import annotations

import numpy as np

from zoodesk.gui import _render


def test_plane_picks_yx_with_middle_z_and_first_channel() -> None:
    data = np.arange(2 * 5 * 3 * 4).reshape(2, 5, 3, 4)  # C Z Y X
    picked = _render.plane(data, "CZYX")
    np.testing.assert_array_equal(picked, data[0, 2])
    np.testing.assert_array_equal(_render.plane(data, "CZYX", {"C": 1, "Z": 0}), data[1, 0])
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 1] = 9
    assert _render.plane(rgb, "YXS").shape == (6, 7, 3)
    xy = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(_render.plane(xy, "XY"), xy.T)


def test_contrast_limits_and_grey_levels() -> None:
    data = np.concatenate([np.zeros(995), np.full(5, 1000.0)])
    lo, hi = _render.auto_limits(data, 0.5, 99.0)
    assert lo == 0.0 and hi < 1000
    grey = _render.to_gray8(np.array([[-5.0, 50.0, 100.0, 500.0]]), (0.0, 100.0))
    assert grey.tolist() == [[0, 127, 255, 255]]
    assert _render.auto_limits(np.full(10, 7.0)) == (7.0, 8.0)


def test_labels_keep_their_colour_and_background_stays_black() -> None:
    labels = np.array([[0, 1, 2], [3, 1, 0]])
    colours = _render.label_colours(labels)
    assert colours.shape == (2, 3, 3) and colours.dtype == np.uint8
    assert colours[0, 0].tolist() == [0, 0, 0]
    assert colours[0, 1].tolist() == colours[1, 1].tolist()
    assert colours[0, 1].tolist() != colours[0, 2].tolist()
    again = _render.label_colours(np.array([[2]]))
    assert again[0, 0].tolist() == colours[0, 2].tolist()


def test_overlay_opacity_and_kinds() -> None:
    base = np.full((2, 2, 3), 100, np.uint8)
    probabilities = np.array([[0.0, 1.0], [0.5, 0.0]], np.float32)
    out = _render.overlay(base, probabilities, "probabilities", _render.OverlayStyle(opacity=1.0))
    assert out[0, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == list(_render.OVERLAY_RGB)
    none = _render.overlay(base, probabilities, "probabilities", _render.OverlayStyle(opacity=0))
    np.testing.assert_array_equal(none, base)
    mask = np.array([[0, 1], [1, 0]], np.uint8)
    half = _render.overlay(base, mask, "labels", _render.OverlayStyle(opacity=0.5))
    assert half[0, 0].tolist() == [100, 100, 100]
    assert half[0, 1].tolist() == [177, 50, 150]  # halfway to magenta (255, 0, 200)
    labels = np.array([[0, 1], [2, 0]], np.uint16)
    coloured = _render.overlay(base, labels, "labels", _render.OverlayStyle(opacity=1.0))
    assert coloured[0, 1].tolist() == _render.label_colours(labels)[0, 1].tolist()
    single = _render.overlay(
        base, labels, "labels", _render.OverlayStyle(opacity=1.0, colour_labels=False)
    )
    assert single[0, 1].tolist() == single[1, 0].tolist() == list(_render.OVERLAY_RGB)
    # A half-resolution output is drawn over the full-resolution input.
    small = np.array([[1]], np.uint8)
    assert _render.overlay(base, small, "labels", _render.OverlayStyle(1.0, False)).shape == (
        2,
        2,
        3,
    )


def test_objects_as_outlines_and_the_object_under_a_pixel() -> None:
    labels = np.zeros((6, 7), np.uint16)
    labels[1:5, 1:4] = 3  # a 4 x 3 object
    labels[1:5, 4:6] = 8  # touching it on the right
    edges = _render.outline_mask(labels)
    # Inside pixels are not edges; where the two objects touch both sides are.
    assert edges[1:5, 1:4].tolist() == [
        [True, True, True],
        [True, False, True],
        [True, False, True],
        [True, True, True],
    ]
    assert edges[2, 4] and not edges[0, 0]
    base = np.full((6, 7, 3), 100, np.uint8)
    style = _render.OverlayStyle(opacity=1.0, colour_labels=False, outlines=True)
    drawn = _render.overlay(base, labels, "instance-labels", style)
    assert drawn[1, 1].tolist() == list(_render.OVERLAY_RGB)
    assert drawn[2, 2].tolist() == [100, 100, 100]  # inside: the input
    filled = _render.overlay(base, labels, "instance-labels", _render.OverlayStyle(1.0, False))
    assert filled[2, 2].tolist() == list(_render.OVERLAY_RGB)
    marked = _render.highlight(base, labels, 8)
    assert marked[1, 4].tolist() == list(_render.HIGHLIGHT_RGB)
    assert marked[1, 1].tolist() == [100, 100, 100]
    # The label under a pixel, also when the labels are half the picture's size.
    assert _render.label_at(labels, (6, 7), 2, 2) == 3
    assert _render.label_at(labels, (6, 7), 2, 5) == 8
    assert _render.label_at(labels, (6, 7), 0, 0) == 0
    assert _render.label_at(labels, (6, 7), 9, 0) == 0
    assert _render.label_at(labels[::2, ::2], (6, 7), 3, 3) == labels[::2, ::2][1, 1]


def test_the_index_shown_along_an_axis() -> None:
    assert _render.shown_index("TYX", (5, 8, 8), "T") == 2
    assert _render.shown_index("YX", (8, 8), "T") == 0
    assert _render.shown_index("CYX", (3, 8, 8), "C") == 0
