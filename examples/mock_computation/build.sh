#!/bin/sh
# Compile mock_compute_engine.c next to this script (the binary is gitignored).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
${CC:-cc} -O2 -Wall -Wextra -std=c11 -o "$here/mock_compute_engine" "$here/mock_compute_engine.c"
echo "built $here/mock_compute_engine"
