import sys

from asrhub.cli import main

sys.exit(main())
