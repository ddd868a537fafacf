"""`python -m sse_chat` is the `sse-chat` command."""

import sys

from .cli import main

sys.exit(main())
