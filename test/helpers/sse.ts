/** A Server-Sent Events reader over fetch, for tests and benchmarks: the client's own (src/shared/sse.ts). */
import { sseEvents as parse, type SseEvent } from '../../src/shared/sse.js';

export type { SseEvent };

export const sseEvents = (res: Response): AsyncGenerator<SseEvent> => parse(res.body!);

/** The text of a log line's safe HTML (tags removed, entities decoded). */
export const htmlText = (html: string): string =>
  html
    .replace(/<[^>]*>/g, '')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
