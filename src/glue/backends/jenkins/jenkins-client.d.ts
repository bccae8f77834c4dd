/** The subset of `jenkins@1.1.0` (no bundled types) that Kiln uses. Errors carry `res` (the raw response) and `notFound`. */
declare module 'jenkins' {
  import type { IncomingMessage } from 'node:http';

  export interface JenkinsOptions {
    baseUrl: string;
    crumbIssuer?: boolean;
    headers?: Record<string, string>;
    timeout?: number;
    promisify?: boolean;
  }
  export interface JenkinsError extends Error {
    res?: IncomingMessage & {
      statusCode?: number;
      headers: Record<string, string | string[] | undefined>;
      body?: unknown;
    };
    notFound?: boolean;
    code?: string;
  }
  interface Common {
    depth?: number;
    tree?: string;
  }
  export default class Jenkins {
    constructor(opts: JenkinsOptions);
    info(opts?: Common): Promise<any>;
    job: {
      create(name: string, xml: string): Promise<void>;
      config(name: string): Promise<string>;
      config(name: string, xml: string): Promise<void>;
      enable(name: string): Promise<void>;
      disable(name: string): Promise<void>;
      destroy(name: string): Promise<void>;
      exists(name: string): Promise<boolean>;
      get(name: string, opts?: Common): Promise<any>;
      get(opts: { name: string } & Common): Promise<any>;
      list(folder?: string): Promise<any[]>;
      build(
        name: string,
        opts?: { parameters?: Record<string, string>; delay?: string; token?: string },
      ): Promise<number>;
      build(opts: {
        name: string;
        parameters?: Record<string, string>;
        delay?: string;
        token?: string;
      }): Promise<number>;
    };
    build: {
      get(name: string, number: number, opts?: Common): Promise<any>;
      get(opts: { name: string; number: number } & Common): Promise<any>;
      stop(name: string, number: number): Promise<void>;
      term(name: string, number: number): Promise<void>;
      log(
        name: string,
        number: number,
        opts?: { start?: number; meta?: boolean; type?: 'text' | 'html' },
      ): Promise<any>;
      log(opts: { name: string; number: number; start?: number; meta?: boolean }): Promise<any>;
    };
    queue: {
      list(opts?: Common): Promise<any[]>;
      item(id: number): Promise<any>;
      cancel(id: number): Promise<void>;
    };
    crumbIssuer: { get(): Promise<any> };
  }
}
