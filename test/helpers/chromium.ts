import { chromium, type BrowserContext, type LaunchOptions } from 'playwright-core';

/** Debian's Chromium (PLATFORM.md), headless, with nothing that reaches out on its own. */
export const CHROMIUM_LAUNCH: LaunchOptions = {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
};

/** A Chromium with its own profile in `profileDir` (a temp dir the caller removes). */
export function launchChromium(
  profileDir: string,
  extra: Parameters<typeof chromium.launchPersistentContext>[1] = {},
): Promise<BrowserContext> {
  return chromium.launchPersistentContext(profileDir, { ...CHROMIUM_LAUNCH, ...extra });
}
