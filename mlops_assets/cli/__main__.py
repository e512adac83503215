"""`python -m mlops_assets.cli`: the same as the `mlops-assets` console script."""

import sys

from mlops_assets.cli import main

sys.exit(main())
