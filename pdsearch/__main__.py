import sys

from pdsearch.cli import main

sys.exit(main())
