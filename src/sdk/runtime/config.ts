/**
 * The part of an image's config (`docker image inspect` .Config) that decides how `docker run` starts the
 * container's process, and what else a booted machine should do with it. The builder has already applied SHELL and
 * the shell form: Entrypoint and Cmd are argv arrays here, as the engine stores them.
 */
export interface ImageRuntimeConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  /** SHELL: only read for HEALTHCHECK CMD-SHELL (Docker runs that through the image's shell at check time). */
  Shell?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  Labels?: Record<string, string> | null;
  StopSignal?: string;
  /** Seconds; only in configs made through the API (`docker commit`), never by a Dockerfile. */
  StopTimeout?: number | null;
  /** Durations in nanoseconds; 0 means Docker's default. */
  Healthcheck?: {
    Test?: string[] | null;
    Interval?: number;
    Timeout?: number;
    StartPeriod?: number;
    Retries?: number;
  } | null;
  ExposedPorts?: Record<string, unknown> | null;
  Volumes?: Record<string, unknown> | null;
}
