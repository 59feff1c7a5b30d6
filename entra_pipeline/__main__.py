import sys

from entra_pipeline.cli import main

sys.exit(main())
