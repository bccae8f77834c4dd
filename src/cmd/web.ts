/** Composition root for `kiln web` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln web: not available yet\n');
  return 2;
}
