/** Composition root for `kiln glue-server` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln glue-server: not available yet\n');
  return 2;
}
