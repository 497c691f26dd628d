"""Console app ``todo`` for the task store, built on taskcore's public API only."""

import time

#: When the app started (monotonic clock), taken before taskcore is imported: the interactive
#: deadline counts from here, so slow start-up is part of the time the user waits.
STARTED = time.monotonic()
