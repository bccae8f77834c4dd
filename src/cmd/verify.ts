/** Composition root for `kiln verify` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln verify: not available yet\n');
  return 2;
}
