"""`python -m notagen …` is the same as the `notagen` console script."""

import sys

from notagen.cli import main

sys.exit(main())
