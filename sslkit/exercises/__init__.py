"""Exercises that check themselves: the learner writes the key idea, a check says whether it is right and what to fix.

An exercise in a notebook is two cells. The first, tagged ``exercise:<name>``, defines one function; its body
holds the solution between nbgrader's markers, which the student version (``make student``, or
``python -m sslkit.nbtools student``) replaces with ``raise NotImplementedError("your code here")``::

    def my_ntxent(z0, z1, temperature):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

The second checks it and picks what the rest of the notebook uses::

    ntxent = sslkit.exercises.check_ntxent(my_ntxent).use

``check_<name>`` runs the answer against the kit's reference on random inputs and edge cases, and prints one
line: ``correct``, ``not done yet`` (the answer still raises the placeholder's NotImplementedError), or what
is wrong with a hint for the mistake it found (for NT-Xent: the self-similarity left in the denominator, the wrong
positive, a missing normalisation, ...). ``.use`` is the learner's function when it is correct and the kit's
reference otherwise, so a notebook runs to the end with every exercise unanswered. A check never changes the
notebook's random state.

Every exercise is registered once (``EXERCISES``), with its reference, its difficulty and a table of common
mistakes: the tests check that each check passes on the notebook's solution and fails, with its hint, on every
planted mistake.
"""

from __future__ import annotations

import importlib
import random
from dataclasses import dataclass, field
from typing import Callable

NOTEBOOK_MODULES = ("nb01", "nb02", "nb03", "nb04", "nb05", "nb06", "nb07", "nb08")


class Hint(AssertionError):
    """Raised by an exercise's test when the answer is wrong; its message says what to fix."""


@dataclass(frozen=True)
class Mistake:
    """A planted mistake: a wrong answer, and a piece of the hint the check must give for it."""

    description: str
    answer: Callable
    hint: str


@dataclass(frozen=True)
class Exercise:
    """One exercise: where it is, what the learner writes, how it is tested, and the mistakes it diagnoses.

    ``test(answer)`` raises ``Hint`` with a specific message when the answer is wrong and returns when it is
    right; ``reference`` is the kit's own version (what ``.use`` falls back to).
    """

    name: str
    notebook: str
    answer_name: str
    idea: str
    difficulty: int  # 1 (a few lines, direct from the text) to 3 (needs the idea and care with shapes)
    test: Callable
    reference: Callable
    mistakes: tuple = field(default_factory=tuple)


@dataclass
class Outcome:
    """What a check found: ``status`` is "correct", "wrong" or "not done"; ``use`` is the function to go on with."""

    exercise: str
    status: str
    message: str
    use: Callable

    def __bool__(self) -> bool:
        return self.status == "correct"

    def __repr__(self) -> str:
        return f"Outcome({self.exercise!r}, {self.status!r})"


EXERCISES: dict[str, Exercise] = {}


def register(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"exercise {exercise.name!r} is registered twice")
    EXERCISES[exercise.name] = exercise
    return exercise


def _load_all() -> dict[str, Exercise]:
    for module in NOTEBOOK_MODULES:
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{module}":
                raise
    return EXERCISES


def exercises() -> dict[str, Exercise]:
    """Every registered exercise by name."""
    return dict(_load_all())


# the messages of the placeholder that stands for an unanswered exercise: the student version's
# ``raise NotImplementedError("your code here")``, and nbgrader's bare ``raise NotImplementedError()``
PLACEHOLDER_MESSAGES = ("your code here", "")


def is_placeholder(error: BaseException) -> bool:
    """Whether ``error`` is the placeholder's NotImplementedError (the exercise is not done yet), not one raised by
    torch or by the learner's own code, which is a wrong answer whose message the learner should read."""
    return isinstance(error, NotImplementedError) and str(error).strip() in PLACEHOLDER_MESSAGES


def as_indices(got, of: str, case: str = ""):
    """``got`` as a 1-d torch.long tensor, or a Hint when it is not a 1-d tensor (or list) of integers.

    ``of`` names the indices for the hint ("indices into labels"), ``case`` the inputs they were drawn for. An empty
    list counts as no indices (torch.as_tensor([]) is float32)."""
    import torch

    where = f" ({case})" if case else ""
    try:
        indices = torch.as_tensor(got)
    except (TypeError, ValueError, RuntimeError):  # RuntimeError: None ("Could not infer dtype of NoneType")
        raise Hint(f"return a 1-d tensor of {of}, not {type(got).__name__}{where}") from None
    if indices.ndim == 1 and indices.numel() == 0:
        return indices.long()
    if indices.ndim != 1 or indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise Hint(f"return a 1-d tensor (or list) of integer {of}, not a {indices.dtype} tensor of shape "
                   f"{tuple(indices.shape)}{where}")
    return indices.long()


def same_dtype(got, like, what: str = "your result") -> None:
    """A Hint when the tensor ``got`` has another dtype than the input tensor ``like``: the exercise's function
    keeps the dtype of its inputs, as lightly's does, so that it drops into float32 training."""
    if got.dtype != like.dtype:
        dtype, wanted = (str(t).replace("torch.", "") for t in (got.dtype, like.dtype))
        raise Hint(f"{what} came back as {dtype}: return a {wanted} tensor, as the inputs are (compute in the "
                   f"inputs' dtype, without .double() or a conversion through NumPy)")


def _fork_random_state():
    """Save the random states of Python, NumPy and torch; the returned function restores them."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()

    def restore():
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])

    return restore


def check(name: str, answer: Callable, verbose: bool = True) -> Outcome:
    """Test ``answer`` for the exercise ``name``; print and return the ``Outcome``."""
    ex = exercises().get(name)
    if ex is None:
        raise ValueError(f"no exercise {name!r}; the exercises are: {', '.join(sorted(EXERCISES))}")
    if not callable(answer):
        raise TypeError(f"check_{name} takes your function ({ex.answer_name}), not {type(answer).__name__}: "
                        f"write check_{name}({ex.answer_name})")
    restore = _fork_random_state()
    try:
        ex.test(answer)
        status, message = "correct", f"{name}: correct. The rest of the notebook uses your {ex.answer_name}."
    except NotImplementedError as e:
        if is_placeholder(e):
            status, message = "not done", (f"{name}: not done yet (your {ex.answer_name} still raises "
                                           f"NotImplementedError). Replace that line with your code and run this "
                                           f"cell again; until then the notebook goes on with the kit's version.")
        else:  # raised by torch (`1 - mask` on a bool tensor) or by the learner's own code: its message is the hint
            status, message = "wrong", (f"{name}: your {ex.answer_name} raised NotImplementedError: {e} "
                                        f"(The notebook goes on with the kit's version.)")
    except Hint as e:
        status, message = "wrong", f"{name}: not yet right. {e} (The notebook goes on with the kit's version.)"
    except Exception as e:  # the answer itself failed: show its error as a hint
        status, message = "wrong", (f"{name}: your {ex.answer_name} raised {type(e).__name__}: {e}. Check the "
                                    f"shapes and types it receives (the exercise's text describes them). "
                                    f"(The notebook goes on with the kit's version.)")
    finally:
        restore()
    if verbose:
        print(message)
    return Outcome(name, status, message, answer if status == "correct" else ex.reference)


def __getattr__(attr: str):
    """``check_<name>(answer)``: the check of the exercise ``name`` (see ``check``)."""
    if attr.startswith("check_"):
        name = attr[len("check_"):]
        if name in exercises():
            def check_exercise(answer: Callable, verbose: bool = True) -> Outcome:
                return check(name, answer, verbose)

            check_exercise.__name__ = attr
            check_exercise.__doc__ = f"Check your answer to the exercise {name!r}: {EXERCISES[name].idea}"
            return check_exercise
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def __dir__():
    return sorted(set(globals()) | {f"check_{n}" for n in exercises()})
