#!/bin/sh
# Serve /srv/www on $PORT with busybox httpd, in the foreground.
exec httpd -f -v -p "${PORT:-8080}" -h /srv/www
