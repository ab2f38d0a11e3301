"""`python -m vtdemo ...`: see `vtdemo.cli`."""

import sys

from .cli import main

sys.exit(main())
