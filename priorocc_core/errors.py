"""The base of every error the project expects from bad input (files, configs, options).

Command-line tools print these as one line naming the input (see :mod:`priorocc_core.cli`);
anything else is a bug and keeps its traceback. A leaf module: imports nothing of the project.
"""


class PriorOccError(ValueError):
    """Bad input the project expects and explains: a config key, a checkpoint, a data file, an option."""
