/** Composition root for `kiln glue` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln glue: not available yet\n');
  return 2;
}
