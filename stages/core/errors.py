"""The one exception type for problems the user can fix (bad input, bad params).

The CLI prints its message as a single line on stderr and exits non-zero, with no
traceback. Anything else that goes wrong is a bug and is allowed to raise.
"""


class PipelineError(Exception):
    """A user-fixable problem, described in one sentence that names the file and place."""
