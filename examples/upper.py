"""Reads standard input and echoes it in capitals, with the arguments.

    echo hi | sudo target/release/evald run examples/upper.py --stdin - -- one two
"""

import sys

print("args:", " ".join(sys.argv[1:]))
sys.stdout.write(sys.stdin.read().upper())
