"""``python -m todo_app``: the same as the ``todo`` command."""

import sys

from todo_app.cli import main

sys.exit(main())
