/** Composition root for `kiln sdk` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln sdk: not available yet\n');
  return 2;
}
