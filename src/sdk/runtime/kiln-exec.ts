import type { RuntimePlan } from './plan.js';

/**
 * kiln-exec: the one program between the init system and the image's ENTRYPOINT/CMD (and its HEALTHCHECK), written
 * into the guest as /usr/lib/kiln/kiln-exec. systemd's own directives cannot give what `docker run` gives (tried in
 * a booted image, systemd 252): User= refuses a numeric uid missing from passwd (status 217/USER) where Docker runs
 * it with gid 0; User=+Group= keeps the user's other groups where Docker drops them; root gets no supplementary
 * group where Docker gives [0]; SIGPIPE is ignored; USER, LOGNAME, SHELL, TERM, LANG, INVOCATION_ID, JOURNAL_STREAM
 * and SYSTEMD_EXEC_PID are added to the environment; WorkingDirectory= is entered as the user, not as root. A shell
 * wrapper cannot do it either: setpriv/env exec with execvp(3), which loses argv[0] of a name found through PATH and
 * runs a file the kernel refuses (no #!) with /bin/sh, and a shell adds PWD, SHLVL or `_` to the environment.
 *
 * So a small Perl program does runc's steps in runc's order: stdin from /dev/null, umask 022, default signal
 * dispositions and an empty signal mask, a session of its own, WORKDIR made if missing (root, 0755) and entered as
 * root, groups, gid and uid set, the command looked up like Go 1.19's exec.LookPath (what runc 1.1 uses) as that
 * user in the given PATH, then execve(2) with argv[0] unchanged and exactly the given environment. perl-base is
 * Essential on Debian and Devuan (as dpkg needs it), so every image Kiln can boot has /usr/bin/perl and POSIX.pm.
 * Failures print `<name>: cannot start: <why>` on stderr (the console) and exit 127 (not found) or 126. Under
 * systemd, whose stdout and stderr are the journal's socket, it puts pipes in their place and stays as the unit's
 * main process, the program its child (relay_sockets): the one departure from runc's model, for `/dev/stdout`.
 *
 * The same program runs one HEALTHCHECK (--health) with the same identity, environment and directory, and keeps
 * Docker's health state in a status file (JSON); --health-reset starts a new state when the program (re)starts.
 */
export const KILN_EXEC = '/usr/lib/kiln/kiln-exec';

/** Exit status of `kiln-exec --health` when the program must be restarted (no --restart-unit given). */
export const HEALTH_RESTART_STATUS = 3;

// No backtick and no dollar-brace in the Perl below: it lives in a template literal.
export const KILN_EXEC_SOURCE = String.raw`#!/usr/bin/perl
# Added by Kiln: starts the image's program the way docker run starts a container's process. See
# manifest.json "runtime" for what each option was made from. Usage:
#   kiln-exec --name=N --workdir=D --uid=U --gid=G --groups=G,G [--env=K=V | --env-hostname]... -- ARGV...
#   kiln-exec --health=FILE --interval-ms=I --timeout-ms=T --start-period-ms=S --retries=R [--restart-unit=U]
#             [--console=DEV] <as above> -- ARGV...
#   kiln-exec --health-reset=FILE
use strict;
use warnings;
use POSIX ();

my (%opt, @env);
while (@ARGV) {
    my $arg = shift @ARGV;
    last if $arg eq '--';
    if ($arg eq '--env-hostname') { push @env, 'HOSTNAME=' . (POSIX::uname())[1]; next }
    my ($key, $value) = $arg =~ /\A--([a-z-]+)=(.*)\z/s or die "kiln-exec: unknown argument $arg\n";
    if ($key eq 'env') { push @env, $value } else { $opt{$key} = $value }
}
my @argv = @ARGV;
my $name = $opt{name} // 'kiln-app';

if (defined $opt{'health-reset'}) { write_status($opt{'health-reset'}, { status => 'starting', streak => 0, started_at => uptime() }); exit 0 }
if (defined $opt{health}) { exit health_check() }
start_program();

sub fail {
    my ($code, $why) = @_;
    print STDERR "$name: cannot start: $why\n";
    exit $code;
}

sub start_program {
    @argv or fail(126, 'no command');
    umask 022;
    open(STDIN, '<', '/dev/null') or fail(126, "/dev/null: $!");
    relay_sockets();
    POSIX::sigaction($_, POSIX::SigAction->new('DEFAULT')) for grep { $_ != 9 && $_ != 19 } 1 .. 64;
    # glibc's sigaction refuses 32 and 33 (its own), so an ignore inherited on them would survive: the kernel call
    # (x86-64 rt_sigaction, 13; handler SIG_DFL, no flags, restorer or mask) resets them as runc's start does.
    for my $sig (32, 33) { my $act = pack('Q4', 0, 0, 0, 0); syscall(13, $sig + 0, $act, 0, 8); }
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new());
    POSIX::setsid();    # fails harmlessly when systemd made us a session leader already
    my $dir = $opt{workdir};
    make_workdir($dir);
    chdir($dir) or fail(126, "WORKDIR $dir: $!");
    $) = join(' ', $opt{gid}, split(/,/, $opt{groups}));    # setgroups(groups), then the effective gid
    POSIX::setgid($opt{gid}) or fail(126, "setgid $opt{gid}: $!");
    POSIX::setuid($opt{uid}) or fail(126, "setuid $opt{uid}: $!");
    my $path = look_path($argv[0]);
    # execve(2) itself, 59 on x86-64 (the one architecture Kiln boots): Perl's exec is execvp(3), which runs a file
    # the kernel refuses (no #!) with /bin/sh where docker run fails with "exec format error", and Perl would put
    # the environment in its own order. Both lists are NULL-terminated arrays of pointers to these strings.
    syscall(59, $path, pack('p*', @argv, undef), pack('p*', @env, undef));
    fail(126, "exec $path: " . lc $!);
}

# docker run gives the process pipes for stdout and stderr; systemd gives it the journal's socket, and open(2) of
# /dev/stdout or /dev/stderr (/proc/self/fd/N) refuses a socket with ENXIO: nginx's error_log /dev/stderr, a log file
# symlinked there. So a socket is put behind a pipe. Its reader is this process, which stays as the unit's main
# process while the program runs as its child (as containerd's shim reads a container's pipes from outside it): it
# passes every signal it gets on to the program, copies the pipes to the sockets, and once the program has ended and
# what it wrote is copied, it ends the same way (the same status, or the same signal). systemd's final SIGKILL to
# the unit's other processes (KillMode=mixed) comes only after the main process is gone, so it never cuts the
# program's last lines. Returns in the child; never returns in the parent.
sub relay_sockets {
    my @ends;
    for my $fd (1, 2) {
        my $out = $fd == 1 ? \*STDOUT : \*STDERR;
        next unless -S $out;
        pipe(my $r, my $w) or fail(126, "pipe: $!");
        push @ends, { fd => $fd, out => $out, r => $r, w => $w };
    }
    return unless @ends;
    # Signals that come before the child exists are held, then passed on.
    my $all = POSIX::SigSet->new(grep { $_ != 9 && $_ != 19 } 1 .. 31);
    my $old = POSIX::SigSet->new();
    POSIX::sigprocmask(POSIX::SIG_BLOCK(), $all, $old);
    my $child = fork() // fail(126, "fork: $!");
    if (!$child) {
        for my $e (@ends) {
            POSIX::dup2(fileno($e->{w}), $e->{fd}) // fail(126, "dup2: $!");
            close $e->{r};
            close $e->{w};
        }
        return;    # the caller resets the signal mask and dispositions
    }
    close $_->{w} for @ends;
    my ($status, $gone);
    # The program's end wakes the loop through a pipe of its own: a SIGCHLD that comes just before select(2) would
    # otherwise leave it waiting on pipes that a background child of the program may hold open.
    pipe(my $wake_r, my $wake_w) or fail(126, "pipe: $!");
    POSIX::sigaction(17, POSIX::SigAction->new(sub { syswrite($wake_w, 'x') }));
    # A write to a socket nobody reads any more fails (the output is dropped) instead of killing the relay.
    POSIX::sigaction(13, POSIX::SigAction->new('IGNORE'));
    for my $sig (grep { $_ != 9 && $_ != 13 && $_ != 17 && $_ != 19 } 1 .. 31) {
        my $n = $sig;
        POSIX::sigaction($n, POSIX::SigAction->new(sub { kill $n, $child unless $gone }));
    }
    POSIX::sigprocmask(POSIX::SIG_SETMASK(), $old);
    my %open = map { fileno($_->{r}) => $_ } @ends;
    # Copies one read of a pipe: 1 when something was copied, 0 when there was nothing (now, or any more). A signal
    # passed on meanwhile (EINTR) loses nothing.
    my $again = sub { $! == POSIX::EINTR() || $! == POSIX::EAGAIN() };
    my $copy = sub {
        my ($e) = @_;
        my $got = sysread($e->{r}, my $buf, 65536);
        return 0 if !defined $got && $again->();
        if (!$got) { delete $open{fileno($e->{r})}; return 0 }
        for (my $off = 0; $off < $got;) {
            my $n = syswrite($e->{out}, $buf, $got - $off, $off);
            next if !defined $n && $! == POSIX::EINTR();
            last unless $n;    # the socket is gone: drop the output, never stall the program
            $off += $n;
        }
        return 1;
    };
    until (defined $status) {
        if (waitpid($child, POSIX::WNOHANG()) == $child) { ($status, $gone) = ($?, 1); last }
        my $rin = '';
        vec($rin, $_, 1) = 1 for keys %open, fileno($wake_r);
        my $rout = $rin;
        next if select($rout, undef, undef, undef) <= 0;
        sysread($wake_r, my $ignored, 64) if vec($rout, fileno($wake_r), 1);
        $copy->($open{$_}) for grep { vec($rout, $_, 1) && $open{$_} } keys %open;
    }
    # What the program wrote before it ended is in the pipes: copy it, without waiting for writers it left behind.
    for my $e (values %open) {
        my $flags = fcntl($e->{r}, POSIX::F_GETFL(), 0);
        fcntl($e->{r}, POSIX::F_SETFL(), $flags | POSIX::O_NONBLOCK());
        1 while $open{fileno($e->{r})} && $copy->($e);
    }
    if ($status & 127) {
        my $sig = $status & 127;
        POSIX::sigaction($sig, POSIX::SigAction->new('DEFAULT'));
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new());
        kill $sig, $$;
        POSIX::_exit(128 + $sig);    # a signal whose default is not to end (SIGCHLD-like): end as a shell says it
    }
    POSIX::_exit($status >> 8);
}

# Docker makes a missing WORKDIR at start: each missing directory root-owned, mode 0755.
sub make_workdir {
    my ($dir) = @_;
    my $at = '';
    for my $part (grep { length } split m{/}, $dir) {
        $at .= "/$part";
        next if -d $at;
        fail(126, "Cannot mkdir: $dir is not a directory") if -e $at;
        mkdir($at, 0755) or fail(126, "WORKDIR $dir cannot be made: $at: " . lc $!);
    }
}

# Go's exec.LookPath: a name with a slash is taken as it is; otherwise each PATH entry ("" is ".") is joined and
# cleaned like filepath.Join, and the first that is not a directory and has an execute bit wins. A match relative to
# the current directory is refused (Go's ErrDot), as runc does.
sub look_path {
    my ($file) = @_;
    if (index($file, '/') >= 0) {
        my $err = not_executable($file);
        fail($err =~ /no such/ ? 127 : 126, qq(exec: "$file": ) . ($err =~ /denied/ ? $err : "stat $file: $err")) if $err;
        return $file;
    }
    my ($search) = map { /\APATH=(.*)\z/s ? $1 : () } @env;
    for my $dir (length($search // '') ? split(/:/, $search, -1) : ()) {
        my $path = clean((length $dir ? $dir : '.') . "/$file");
        next if not_executable($path);
        fail(126, qq(exec: "$file": cannot run executable found relative to current directory)) unless $path =~ m{\A/};
        return $path;
    }
    fail(127, qq(exec: "$file": executable file not found in \$PATH));
}

sub not_executable {
    my @st = stat($_[0]) or return lc "$!";
    return (!-d _ && ($st[2] & 0111)) ? '' : 'permission denied';
}

# Go's filepath.Clean.
sub clean {
    my ($p) = @_;
    my $rooted = $p =~ m{\A/};
    my @out;
    for my $part (split m{/}, $p) {
        next if $part eq '' || $part eq '.';
        if ($part ne '..') { push @out, $part }
        elsif (@out && $out[-1] ne '..') { pop @out }
        elsif (!$rooted) { push @out, '..' }
    }
    my $c = ($rooted ? '/' : '') . join('/', @out);
    return length $c ? $c : '.';
}

sub uptime {
    open(my $fh, '<', '/proc/uptime') or return 0;
    my ($up) = split ' ', scalar <$fh>;
    return $up + 0;
}

sub health_check {
    my $file = $opt{health};
    my %s = read_status($file);
    my $start = uptime();
    # Docker's first check comes an interval after the start; systemd fires a timer that was restarted with the
    # program at once when the previous check ended long ago: such an early call is not a check.
    return 0 if $start - $s{started_at} < $opt{'interval-ms'} / 2000;
    my $started_iso = iso_now();
    pipe(my $r, my $w) or die "kiln-exec: pipe: $!\n";
    my $pid = fork() // die "kiln-exec: fork: $!\n";
    if (!$pid) {
        close $r;
        open(STDOUT, '>&', $w);
        open(STDERR, '>&', $w);
        start_program();
    }
    close $w;
    my ($out, $timed_out) = ('', 0);
    my $done = eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm(POSIX::ceil($opt{'timeout-ms'} / 1000) || 1);
        while (sysread($r, my $buf, 4096)) { $out .= $buf if length($out) < 4096 }
        waitpid($pid, 0);
        alarm 0;
        1;
    };
    if (!$done) {
        $timed_out = 1;
        kill 'KILL', -$pid, $pid;
        waitpid($pid, 0);
        $out = sprintf('Health check exceeded timeout (%gs)', $opt{'timeout-ms'} / 1000);
    }
    my $code = $timed_out ? -1 : ($? & 127) ? 128 + ($? & 127) : $? >> 8;
    # Docker: a pass resets the streak; a failure before the first pass, within the start period, does not count.
    my $before = $s{status};
    if ($code == 0) { $s{status} = 'healthy'; $s{streak} = 0 }
    elsif (!($s{status} eq 'starting' && $start - $s{started_at} < $opt{'start-period-ms'} / 1000)) {
        $s{streak}++;
        $s{status} = 'unhealthy' if $s{streak} >= $opt{retries};
    }
    $s{last} = { start => $started_iso, end => iso_now(), code => $code, output => substr($out, 0, 4096) };
    write_status($file, \%s);
    my $restart = $s{status} eq 'unhealthy';
    my $line = "$name: health: $s{status} (exit $code" . ($s{streak} ? ", $s{streak} failed in a row" : '') . ')' . ($restart ? ', restarting it' : '');
    print "$line\n";
    if (($before ne $s{status} || $restart) && open(my $console, '>>', $opt{console} // '/dev/console')) { print $console "$line\n" }
    return 0 unless $restart;
    return 3 unless $opt{'restart-unit'};
    system('systemctl', '--no-block', 'restart', $opt{'restart-unit'});
    return 0;
}

sub read_status {
    my ($file) = @_;
    my %s = (status => 'starting', streak => 0, started_at => uptime());
    open(my $fh, '<', $file) or return %s;
    local $/;
    my $text = <$fh>;
    $s{status} = $1 if $text =~ /^  "Status": "(starting|healthy|unhealthy)"/m;
    $s{streak} = $1 if $text =~ /^  "FailingStreak": (\d+)/m;
    $s{started_at} = $1 if $text =~ /^  "StartedAtUptime": ([0-9.]+)/m;
    return %s;
}

# Docker's State.Health shape (Status, FailingStreak, the last check in Log) plus when the program started.
sub write_status {
    my ($file, $s) = @_;
    (my $dir = $file) =~ s{/[^/]*\z}{};
    mkdir $dir, 0755;
    my $log = '';
    if (my $l = $s->{last}) {
        $log = sprintf(qq(\n    { "Start": %s, "End": %s, "ExitCode": %d, "Output": %s }\n  ), json($l->{start}), json($l->{end}), $l->{code}, json($l->{output}));
    }
    open(my $fh, '>', "$file.tmp") or return;
    printf $fh qq({\n  "Status": "%s",\n  "FailingStreak": %d,\n  "StartedAtUptime": %s,\n  "Log": [%s]\n}\n), $s->{status}, $s->{streak}, $s->{started_at}, $log;
    close $fh;
    rename("$file.tmp", $file);
}

sub json {
    my ($s) = @_;
    my $copy = $s;
    my $utf8 = utf8::decode($copy);
    $s =~ s/(["\\])/\\$1/g;
    $s =~ s/([\x00-\x1f\x7f])/sprintf('\\u%04x', ord $1)/ge;
    $s =~ s/([\x80-\xff])/sprintf('\\u%04x', ord $1)/ge unless $utf8;
    return qq("$s");
}

sub iso_now { return POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime) }
`;

/** The names one application service uses; `instance` other than 'app' lets tests install several in one image. */
export interface AppNames {
  /** Prefix of every console line about it, and its journal identifier: kiln-app. */
  tag: string;
  unit: string;
  healthTimer: string;
  healthService: string;
  /** Docker's health state as JSON (Status, FailingStreak, the last check's Log entry). */
  statusFile: string;
  /** sysvinit: the runner /etc/inittab starts, and its inittab id (at most 4 characters). */
  runner: string;
  inittabId: string;
}

export function appNames(instance = 'app'): AppNames {
  if (!/^[a-z0-9]{1,3}$/.test(instance)) throw new Error(`bad app instance name ${instance}`);
  const tag = `kiln-${instance}`;
  return {
    tag,
    unit: `${tag}.service`,
    healthTimer: `${tag}-health.timer`,
    healthService: `${tag}-health.service`,
    statusFile: `/run/kiln/${tag}.health`,
    runner: `/etc/kiln/${instance}.sh`,
    inittabId: `k${instance}`,
  };
}

/** kiln-exec's words (after its path) that start `argv` with the plan's identity, environment and directory. */
export function execArgs(plan: RuntimePlan, names: AppNames, argv: readonly string[]): string[] {
  const id = plan.identity!;
  return [
    `--name=${names.tag}`,
    `--workdir=${plan.workdir}`,
    `--uid=${id.uid}`,
    `--gid=${id.gid}`,
    `--groups=${id.groups.join(',')}`,
    ...plan.env!.map((v) => (v.value === null ? '--env-hostname' : `--env=${v.name}=${v.value}`)),
    '--',
    ...argv,
  ];
}

/**
 * kiln-exec's words for one HEALTHCHECK. With `restartUnit` it restarts that unit itself when the program turns
 * unhealthy, else it exits 3; a change of state is also written to `console` (default /dev/console).
 */
export function healthArgs(
  plan: RuntimePlan,
  names: AppNames,
  o: { restartUnit?: string; console?: string } = {},
): string[] {
  const h = plan.health!;
  return [
    `--health=${names.statusFile}`,
    `--interval-ms=${h.intervalMs}`,
    `--timeout-ms=${h.timeoutMs}`,
    `--start-period-ms=${h.startPeriodMs}`,
    `--retries=${h.retries}`,
    ...(o.restartUnit ? [`--restart-unit=${o.restartUnit}`] : []),
    ...(o.console ? [`--console=${o.console}`] : []),
    ...execArgs(plan, names, h.argv),
  ];
}
