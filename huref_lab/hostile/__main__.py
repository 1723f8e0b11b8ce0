"""python -m huref_lab.hostile CASES.json RESULTS.json (see `huref_lab.hostile.runner`)."""

import sys

from huref_lab.hostile.runner import main

main(sys.argv[1:])
