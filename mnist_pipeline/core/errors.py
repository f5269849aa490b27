"""The one exception type for problems the user can fix (bad input, bad params).

The CLI prints its message as a single line on stderr and exits non-zero, with no
traceback. Anything else that goes wrong is a bug and is allowed to raise.
"""


class PipelineError(Exception):
    """A user-fixable problem, described in one sentence that names the file and place."""


class Interrupted(Exception):  # noqa: N818 (what happened, not an error)
    """Ctrl-C stopped a stage; the message says, in one line, what was kept.

    The command line prints it and exits 130, as an interrupted program does.
    """


class ParamsError(PipelineError):
    """A params value that the data or the machine cannot honour, found after loading.

    Its message starts with the dotted key (`train.batch_size is 5000, ...`); the command
    line puts the params file in use in front of it, e.g. `other.yaml: train.batch_size`,
    since the code that finds the problem does not know which file the value came from.
    """


def shown(value: object) -> str:
    """A bad value as a message shows it: numbers bare, text quoted, never more than ~80 chars.

    The value may come from a hostile file (a 30 MB cell, a YAML alias bomb): reprlib
    bounds the work by depth and length *before* anything is formatted, and the result is
    cut again, so showing a value costs the same whatever its size.
    """
    import reprlib

    from mnist_pipeline.core.limits import MAX_SHOWN_CHARS

    if getattr(value, "ndim", None) == 0:  # a numpy scalar -> a plain number
        value = value.item()  # type: ignore[attr-defined]
    if isinstance(value, str):
        value = value[: MAX_SHOWN_CHARS + 1].strip()
        if not value:
            return "an empty cell"
        return _cut(value if is_number(value) else repr(value))
    if value is None:
        return "an empty cell"
    if isinstance(value, int) and value.bit_length() > 200:  # repr of a huge int is slow
        return f"a {value.bit_length()}-bit integer"
    if isinstance(value, bool | int | float):
        return _cut(repr(value))
    bounded = reprlib.Repr()  # Python 3.11 takes no keyword arguments here
    bounded.maxlevel, bounded.maxlist, bounded.maxtuple, bounded.maxdict = 3, 6, 6, 6
    bounded.maxstring = bounded.maxother = MAX_SHOWN_CHARS
    return _cut(bounded.repr(value))


def _cut(text: str) -> str:
    from mnist_pipeline.core.limits import MAX_SHOWN_CHARS

    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def is_number(text: str) -> bool:
    """Whether `text` parses as a float (so a message or a CSV reader can show it bare)."""
    try:
        float(text)
    except ValueError:
        return False
    return True
