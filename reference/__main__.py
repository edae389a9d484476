import os
import sys

from .cli import main


def _run() -> int | str | None:
    """main(), quiet when the reader of stdout goes away (`... --help | head -1`)."""
    try:
        try:
            code = main()
        except SystemExit as e:  # argparse's --help
            code = e.code
        sys.stdout.flush()
    except BrokenPipeError:
        # Nobody reads the rest: drop it, and keep the interpreter's final flush from
        # reporting the same broken pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0
    return code


sys.exit(_run())
