"""What the entry points in scripts/ share: bad input (a missing cache, an unreadable model) as one line
on stderr and exit 2, never a traceback."""

import sys
from pathlib import Path

from huref.errors import HurefError


def run_main(main) -> None:
    """Call `main()`; a HurefError ends the process with its message on one line and exit status 2."""
    try:
        main()
    except HurefError as error:
        print(f"{Path(sys.argv[0]).name}: {error}", file=sys.stderr)
        sys.exit(2)
