"""Exercise checks for the tutorial chapters: ``from declearn.exercises import ch01`` then
``ch01.check_rate(my_answer)`` says whether the answer is right and, if not, gives a hint
without giving the answer away.

Every check returns a :class:`Verdict`: true when right, shown in a notebook as a green or red
line (plain text elsewhere). A chapter's checks live in ``chNN.py`` and compare the student's
answer with a value declearn computes independently, with a tolerance stated in the check.
"""

from declearn.exercises.base import Verdict, check_close, check_equal, check_true

__all__ = ["Verdict", "check_close", "check_equal", "check_true"]
