/** The SDK version is the package version (one release train for all of Kiln). */
export { KILN_VERSION as SDK_VERSION } from '../shared/version.js';
