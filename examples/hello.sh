#!/bin/sh
# `evald box examples/hello.sh`: the box executes the file itself (shebang).
echo "hello from $(uname -n), pid $$, uid $(id -u)"
