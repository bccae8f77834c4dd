/** Composition root for `kiln user` (being built). */
export async function main(_argv: string[]): Promise<number> {
  process.stderr.write('kiln user: not available yet\n');
  return 2;
}
