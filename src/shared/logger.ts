import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/**
 * Structured JSON logs (pino). Ids go in fields, never interpolated into the message. Control characters in
 * strings are escaped by JSON encoding, so user text cannot forge log lines.
 */
export function createLogger(opts: { level?: string; name?: string; destination?: DestinationStream } = {}): Logger {
  const options = {
    level: opts.level ?? process.env.KILN_LOG_LEVEL ?? 'info',
    base: opts.name ? { svc: opts.name } : {},
    redact: {
      paths: ['password', '*.password', 'req.headers.cookie', 'req.headers.authorization'],
      censor: '[redacted]',
    },
  };
  return opts.destination ? pino(options, opts.destination) : pino(options);
}

/** A logger that drops everything: for tests and for library callers that pass none. */
export const silentLogger: Logger = pino({ level: 'silent' });
