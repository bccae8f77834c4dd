/** Composition root for `kiln migrate` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln migrate: not available yet\n');
  return 2;
}
