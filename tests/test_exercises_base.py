"""declearn.exercises.base: verdicts that are right when right, with hints when wrong."""

import numpy as np
import pytest
import torch

from declearn.exercises import Verdict, check_close, check_equal, check_true


def test_check_close_accepts_within_tolerance_and_rejects_outside():
    assert check_close("e", [1.0, 2.0 + 1e-9], np.array([1.0, 2.0]))
    wrong = check_close("e", [1.0, 2.1], [1.0, 2.0], rtol=1e-6, hint="Look at rho.")
    assert not wrong and "Look at rho." in wrong.message
    assert "1 of 2 entries" in wrong.message and "1e-02" in wrong.message
    assert "0.1" not in wrong.message  # the offset would give the answer away
    assert check_close("e", torch.tensor([3.0]), [3.0])


def test_check_close_scalar_says_direction_not_offset():
    high = check_close("e", 0.9, 0.8635)
    low = check_close("e", 0.5, 0.8635)
    assert "too large" in high.message and "1e-02" in high.message
    assert "too small" in low.message and "1e-01" in low.message
    for v in (high, low):
        assert "0.03" not in v.message and "0.36" not in v.message and "0.86" not in v.message


def test_check_close_shape_nan_and_type_errors():
    assert "shape" in check_close("e", [1.0], [1.0, 2.0]).message
    assert "NaN" in check_close("e", [float("nan")], [1.0]).message
    with pytest.raises(TypeError, match="expected a number"):
        check_close("e", object(), 1.0)


def test_verdict_displays_and_equal_true():
    v = check_equal("01.2", 3, 4, hint="Count the neighbors.")
    assert isinstance(v, Verdict) and not v
    assert "not yet" in str(v) and "not yet" in v._repr_html_()
    assert check_equal("x", (1, 2), (1, 2))
    assert check_true("x", True, right="yes", wrong="no").message == "yes"
    assert check_true("x", False, right="yes", wrong="no").message == "no"


def test_not_yet_and_is_number():
    from declearn.exercises.base import is_number, not_yet

    v = not_yet("9.1", "a pair of numbers")
    assert not v and "answer = None" in v.message and "a pair of numbers" in v.message
    assert is_number(3) and is_number(2.5)
    assert not any(is_number(x) for x in (True, float("nan"), float("inf"), "3", None, [1]))


def test_code_spans_render_as_code_and_exact_answers_do_not_say_right_twice():
    from declearn.exercises.base import check_equal, not_yet

    html = not_yet("x.1", "a number").__repr__(), not_yet("x.1", "a number")._repr_html_()
    assert "`answer = None`" in html[0] and "<code>answer = None</code>" in html[1]
    assert "`" not in html[1]
    assert "right" not in str(check_equal("x.2", 3, 3)).split("correct")[1]
    assert "`prediction = None`" in not_yet("x.3", "a name", name="prediction").message
