import sys

from roxd.main import main

sys.exit(main())
