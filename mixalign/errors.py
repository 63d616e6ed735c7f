"""The one exception type for user errors.

`MixalignError` (and `DataError`, for the user's data) means the user can fix it: a config field,
a file, a value. `mixalign`'s command line prints such an error as one line and exits with code 2;
any other exception is a bug and keeps its traceback.
"""


class MixalignError(ValueError):
    """A problem with what the user gave (config, file, value), described well enough to fix it."""


class DataError(MixalignError):
    """A problem with the user's data, described well enough to fix it."""


def first_line(exc: BaseException) -> str:
    """An exception's message in one line (for a pickle refused by weights_only: the reason, not the advice)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    unsafe = [line.strip() for line in lines if "WeightsUnpickler error" in line or "unsupported GLOBAL" in line]
    return (unsafe or lines or [type(exc).__name__])[0]
