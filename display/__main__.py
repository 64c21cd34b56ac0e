"""``python -m display``: the display process without the cortexcast front end."""

import sys

from cortexcast.display.cli import main

if __name__ == "__main__":  # not when a spawned worker re-imports the main module
    sys.exit(main())
