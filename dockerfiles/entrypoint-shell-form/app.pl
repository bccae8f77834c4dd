#!/usr/bin/perl
# Reports the argv it was started with, then waits like a daemon.
use strict;
use warnings;
$| = 1;
print "KILN-COMPAT-OK entrypoint-shell-form: argv=[@ARGV]\n";
sleep 3600 while 1;
