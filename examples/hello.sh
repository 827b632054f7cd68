#!/bin/sh
# Runs without --language: the box executes the file itself (shebang).
echo "hello from $(uname -n), pid $$, uid $(id -u)"
