/**
 * `kiln glue`: the OpenSSH door's glue. `kiln glue serve` runs the resident glue (glue-serve.ts); anything else is
 * one request run in this process (glue-request.ts). bin/kiln sends the forced command's requests to
 * bin/kiln-glue-forward first when `KILN_GLUE_SOCKET` is set; it comes here only when no resident takes them.
 * Both modules are loaded on demand: `serve` takes its lock before it loads the app.
 */
export async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'serve' && process.env.SSH_ORIGINAL_COMMAND === undefined) {
    const { serve } = await import('./glue-serve.js');
    return serve(argv.slice(1));
  }
  const { runRequest } = await import('./glue-request.js');
  return runRequest(argv);
}
