"""The one exception type for bad input: a table, a config value, a condition, a workdir the user gave.

It is a ``ValueError``, so library callers catch it as usual; the command-line entry points print it as one line
(``mcjax.runtime.exit_on_input_errors``) where any other exception is an internal error and keeps its traceback.
"""


class InputError(ValueError):
    """The input or configuration cannot be used; the message names the value and what is accepted."""
