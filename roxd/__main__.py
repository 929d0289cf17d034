from roxd.main import main
import sys

sys.exit(main())
