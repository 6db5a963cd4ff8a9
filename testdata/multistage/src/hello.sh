#!/bin/sh
cat /opt/hello/greeting
echo "running as $(id -un)"
