"""``python -m seqstream`` runs the same command as the ``seqstream`` script."""

import sys

from seqstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
