import sys

from rayguard_node.cli import main

sys.exit(main())
