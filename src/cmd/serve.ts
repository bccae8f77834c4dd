/** Composition root for `kiln serve` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln serve: not available yet\n');
  return 2;
}
