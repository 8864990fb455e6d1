"""User-facing errors.

`T1Error` marks a mistake the user can fix (bad file, bad field, wrong model). The CLI prints
its message on one line and exits non-zero; everything else is a bug and keeps its traceback.
"""


class T1Error(Exception):
    """A problem with the user's input, reported without a traceback."""
