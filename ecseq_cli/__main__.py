import sys

from ecseq_cli import main

sys.exit(main())
