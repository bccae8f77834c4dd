import { execFileSync } from 'node:child_process';

/** Makes a self-signed EC (P-256) certificate with openssl: key and certificate as PEM files, valid two days. */
export function selfSignedCert(o: { keyFile: string; certFile: string; subject: string; altNames?: string }): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-keyout',
      o.keyFile,
      '-subj',
      o.subject,
      ...(o.altNames ? ['-addext', `subjectAltName=${o.altNames}`] : []),
      '-days',
      '2',
      '-out',
      o.certFile,
    ],
    { stdio: 'ignore' },
  );
}
